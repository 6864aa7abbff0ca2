"""The benchmark flow on tiny data: paired strategies, a tidy table of the right shape, plots written;
a second profile with identical settings reuses the first one's finished runs instead of re-running them."""

import flows.benchmark
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.benchmark import mgral_benchmark
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_benchmark_two_strategies_two_seeds(tmp_path, prefect_harness, monkeypatch):
    params = write_params(tmp_path / "params.yaml")
    data = yaml.safe_load(params.read_text())
    tiny = {"n_pool": 60, "image_size": 64, "epochs": 2, "finetune_epochs": 1, "budget": 8, "lookup_records": 3,
            "agent_iterations": 5, "cycles": 2, "finetune_repeats": 1}  # repeats: integration/test_benchmark_resume
    for profile in ("quick", "ablation"):  # identical settings, so the ablation can reuse quick's runs
        data["benchmark"][profile].update(tiny)
    data["benchmark"]["ablation"]["reuse"] = "quick"
    params.write_text(yaml.safe_dump(data))
    variant = "random@lookup_table.records=5,agent.lr=0.01"  # a strategy with its own parameters
    summary = mgral_benchmark(str(tmp_path / "quick"), "quick", str(params), [variant, "entropy_sum"], [0, 1])
    tidy = pd.read_csv(tmp_path / "quick" / "results.csv")
    assert list(tidy.columns) == ["strategy", "seed", "cycle", "labeled", "map50_95", "map50"]
    assert len(tidy) == 2 * 2 * 3  # strategies x seeds x (2 cycles + final)
    assert sorted(tidy["labeled"].unique()) == [20, 28, 36]
    first = tidy[tidy["cycle"] == 1].pivot(index="seed", columns="strategy", values="map50_95")
    assert (first[variant] == first["entropy_sum"]).all()  # paired: same first-cycle detector per seed
    aucs = pd.read_csv(tmp_path / "quick" / "auc.csv")
    assert set(aucs["strategy"]) == {variant, "entropy_sum"}
    run = yaml.safe_load((tmp_path / "quick" / "runs" / "seed_1" / "random__lookup_table.records-5_agent.lr-0.01"
                          / "params.yaml").read_text())
    assert run["lookup_table"]["records"] == 5 and run["agent"]["lr"] == 0.01 and run["selection"]["seed"] == 1
    for name in ("learning_curves.png", "first_cycle_classes.png", "first_cycle_domains.png"):
        assert (tmp_path / "quick" / name).stat().st_size > 2000
    client = MlflowClient(f"sqlite:///{tmp_path / 'quick' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mgral-benchmark")
    campaigns_logged = client.search_runs([experiment.experiment_id], "tags.kind = 'campaign'")
    assert sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in campaigns_logged) == sorted(
        (v, s) for v in (variant, "entropy_sum") for s in ("0", "1"))  # the MLflow UI can compare variants
    assert summary["seeds"] == [0, 1]

    # the ablation profile (same settings, reuse: quick) copies entropy_sum and the base, runs only random
    cycles = []
    real_cycle = flows.benchmark.mgral_cycle
    monkeypatch.setattr(flows.benchmark, "mgral_cycle",
                        lambda project, strategy, **kw: cycles.append(strategy) or real_cycle(project, strategy, **kw))
    mgral_benchmark(str(tmp_path / "ablation"), "ablation", str(params), ["entropy_sum", "random"], [0])
    assert cycles == ["random"] * 3
    again = pd.read_csv(tmp_path / "ablation" / "results.csv")
    reused = again[again["strategy"] == "entropy_sum"].reset_index(drop=True)
    original = tidy[(tidy["strategy"] == "entropy_sum") & (tidy["seed"] == 0)].reset_index(drop=True)
    pd.testing.assert_frame_equal(reused, original)
    first_again = again[again["cycle"] == 1].set_index("strategy")["map50_95"]
    assert first_again["random"] == first_again["entropy_sum"]  # the copied base is the same first detector
