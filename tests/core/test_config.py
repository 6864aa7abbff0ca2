"""params.yaml is valid and bad values are rejected with the key's name."""

import pytest

from mgral_workspace.config import ConfigError, Params, load_params


def test_repo_params_yaml_loads_and_matches_defaults():
    params = load_params("params.yaml")
    assert params == Params()
    assert params.selection.strategy == "mgral"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"selection.budget": 0}, "selection.budget"),
        ({"detector.lr0": -1}, "detector.lr0"),
        ({"reward.method": "cosine"}, "reward.method"),
        ({"reward.fallback_rule": "quantile:7"}, "reward"),
        ({"reward.estimator": "mlp"}, "reward.estimator"),
        ({"reward.gp_fallback_std": 0}, "reward.gp_fallback_std"),
        ({"reward.representation": "pixels"}, "reward.representation"),
        ({"reward.task_aware_pca_dims": -1}, "reward.task_aware_pca_dims"),
        ({"agent.baseline_decay": 1.5}, "agent.baseline_decay"),
        ({"campaign.cycles": "many"}, "campaign.cycles"),
        ({"detector.unknown_key": 1}, "detector.unknown_key"),
        ({"selection.strategy": "entropy"}, "selection.strategy"),
        ({"lookup_table.batch_sampling": "clever"}, "lookup_table.batch_sampling"),
        ({"lookup_table.design_proposals": ["random", "mgral"]}, "lookup_table.design_proposals"),
        ({"lookup_table.design_swap_fractions": [0.5, 1.0]}, "lookup_table.design_swap_fractions"),
        ({"lookup_table.design_random_share": 2}, "lookup_table.design_random_share"),
    ],
)
def test_bad_value_names_its_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_params("params.yaml", override)
    assert key in str(err.value)
    assert "params.yaml" in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("selection: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(listy)


def test_benchmark_strategy_variants_parse_and_bad_ones_are_named(tmp_path):
    from mgral_workspace.config import split_strategy_spec

    assert split_strategy_spec("mgral@lookup_table.records=4,agent.lr=0.01") == (
        "mgral", {"lookup_table.records": 4, "agent.lr": 0.01})
    assert split_strategy_spec("random") == ("random", {})
    from mgral_workspace.config import split_strategy_list

    assert split_strategy_list("random, mgral@lookup_table.batch_sampling=designed,agent.final_choice=best_estimate,ebal"
                               ) == ["random", "mgral@lookup_table.batch_sampling=designed,agent.final_choice=best_estimate",
                                     "ebal"]
    with pytest.raises(ValueError, match="agent.lr=0.1"):
        split_strategy_list("random,agent.lr=0.1")
    bad = tmp_path / "params.yaml"
    bad.write_text("benchmark:\n  quick:\n    strategies: [mgral@records]\n")
    with pytest.raises(ConfigError, match=r"benchmark.quick.strategies[\s\S]*mgral@records"):
        load_params(bad)


def test_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 6)]
    bomb = tmp_path / "params.yaml"
    bomb.write_text("\n".join(lines) + "\nselection: *a5\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML: .*aliases \(\*name\) are not allowed") as err:
        load_params(bomb)
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize("content, message", [(("selection:\n  budget: 5\n").encode("utf-16"), "not UTF-8 text"),
                                              (b"\x00\x01\x02\xff\xfe", "not UTF-8 text")])
def test_params_in_the_wrong_encoding_name_the_file(tmp_path, content, message):
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"params.yaml: {message}"):
        load_params(path)


def test_a_directory_in_place_of_params_and_a_huge_bad_value_are_named(tmp_path):
    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(ConfigError, match="params.yaml: not a file"):
        load_params(tmp_path / "params.yaml")
    huge = tmp_path / "huge.yaml"
    huge.write_text("selection:\n  budget: '" + "9" * 100_000 + "'\n")
    with pytest.raises(ConfigError, match="selection.budget") as err:
        load_params(huge)
    assert len(str(err.value)) < 1000


def test_designed_record_batches_are_configured_from_the_lookup_table_section():
    table = load_params("params.yaml", {"lookup_table.batch_sampling": "designed",
                                        "lookup_table.design_proposals": ["coreset", "ebal"],
                                        "lookup_table.design_swap_fractions": [0.3]}).lookup_table
    assert table.batch_sampling == "designed" and list(table.design_proposers()) == ["coreset", "ebal"]
    assert table.design_settings().swap_fractions == (0.3,)
    assert table.design_settings().random_share == table.design_random_share


def test_exact_reward_needs_a_value_read_from_the_detections():
    from mgral_workspace.config import params_from_dict

    with pytest.raises(ConfigError, match="reward.estimator: exact needs lookup_table.value expected_objects or "
                                          "class_gain"):
        params_from_dict({"reward": {"estimator": "exact"}, "lookup_table": {"value": "proxy"}}, "params.yaml")
    params = params_from_dict({"reward": {"estimator": "exact"}, "lookup_table": {"value": "class_gain"},
                               "agent": {"final_choice": "best_sampled"}})
    assert params.reward.estimator == "exact" and params.agent.to_agent_settings().final_choice == "best_sampled"


def test_default_mgral_is_the_exact_class_gain_reward_and_auto_follows_the_value():
    """The defaults (docs/method.md deviation 19): class-gain records, the exact reward, normalised advantages,
    the best drawn batch; `estimator: auto` falls back to the paper's k-NN when records are proxy trainings."""
    from mgral_workspace.benchmark import variant_params
    from mgral_workspace.config import MGRAL_PAPER, params_from_dict

    params = params_from_dict({})
    assert params.lookup_table.value == "class_gain" and params.reward.estimator == "auto"
    assert params.reward.resolved_estimator(params.lookup_table.value) == "exact"
    assert params.agent.advantage == "normalized" and params.agent.final_choice == "best_sampled"
    proxy = params_from_dict({"lookup_table": {"value": "proxy"}})  # no estimator needed beside it
    assert proxy.reward.resolved_estimator("proxy") == "knn"
    assert proxy.reward.estimator_options("proxy")["estimator"] == "knn"
    assert params_from_dict({"reward": {"estimator": "gp"}}).reward.resolved_estimator("class_gain") == "gp"
    paper = variant_params(params, MGRAL_PAPER)
    assert (paper.lookup_table.value, paper.reward.resolved_estimator(paper.lookup_table.value),
            paper.agent.advantage, paper.agent.final_choice) == ("proxy", "knn", "baseline", "top_k")


def test_a_full_proxy_without_proxy_values_is_refused():
    """proxy: full with a value read from the detections would never train: refused with both keys named."""
    with pytest.raises(ValueError, match="proxy: full trains records only for value: proxy; with value: class_gain"):
        load_params("params.yaml", {"lookup_table.proxy": "full"})
    assert load_params("params.yaml", {"lookup_table.proxy": "full",
                                              "lookup_table.value": "proxy"}).lookup_table.proxy == "full"
