"""bench/reward_chain.py's variants: levers joined to a table kind with '+', and which variants share records."""

import pytest

from mgral_workspace.config import load_params
from tests.conftest import REPO, load_bench_script


def _bench():
    return load_bench_script("reward_chain")


def test_variants_set_their_levers_and_share_records_only_under_the_same_proxy():
    bench, params = _bench(), load_params(REPO / "params.yaml")
    variant = bench.variant_params(params, "designed+gp+task_aware+rank+imitate")
    assert variant.lookup_table.batch_sampling == "designed" and variant.reward.estimator == "gp"
    assert variant.reward.representation == "task_aware" and variant.agent.advantage == "rank"
    assert variant.agent.imitation_steps == 20 and params.agent.imitation_steps == 0  # the base is untouched
    assert bench.variant_params(params, "random").lookup_table.batch_sampling == "random"
    key = bench.table_key
    assert key(bench.variant_params(params, "designed")) == key(variant)  # value model, agent: same records
    assert key(bench.variant_params(params, "designed+sampled")) != key(variant)  # another proxy
    assert key(bench.variant_params(params, "random")) != key(variant)
    expected = bench.variant_params(params, "designed+expected+gp")
    assert expected.lookup_table.value == "expected_objects" and params.lookup_table.value == "class_gain"
    paper = bench.variant_params(params, "random")  # a variant starts from the paper's MGRAL, not params.yaml's
    assert (paper.lookup_table.value, paper.reward.estimator, paper.agent.advantage,
            paper.agent.final_choice) == ("proxy", "knn", "baseline", "top_k")
    default = bench.variant_params(params, "random+class_gain+exact+normalized+best_sampled")
    assert all(getattr(default, name) == getattr(params, name) for name in ("lookup_table", "agent")), \
        "the variant named as params.yaml's default MGRAL is that MGRAL"
    assert default.reward.resolved_estimator("class_gain") == params.reward.resolved_estimator("class_gain")
    assert key(expected) != key(variant) and key(expected) == key(bench.variant_params(params, "designed+expected"))
    with pytest.raises(SystemExit, match="unknown lever 'gpp' in 'designed\\+gpp'"):
        bench.variant_params(params, "designed+gpp")
