"""The benchmark flow on tiny data: paired strategies, a tidy table of the right shape, plots written."""

import pandas as pd
import pytest
import yaml

from flows.benchmark import mgral_benchmark
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_benchmark_two_strategies_two_seeds(tmp_path, prefect_harness):
    params = write_params(tmp_path / "params.yaml")
    text = params.read_text().replace("n_pool: 1000", "n_pool: 60").replace("image_size: 128", "image_size: 64")
    text = text.replace("epochs: 40", "epochs: 2").replace("finetune_epochs: 15", "finetune_epochs: 1")
    text = text.replace("budget: 100", "budget: 8").replace("lookup_records: 16", "lookup_records: 3")
    params.write_text(text.replace("agent_iterations: 150", "agent_iterations: 5"))
    variant = "random@lookup_table.records=5,agent.lr=0.01"  # a strategy with its own parameters
    summary = mgral_benchmark(str(tmp_path / "bench"), "quick", str(params), [variant, "entropy_sum"], [0, 1])
    tidy = pd.read_csv(tmp_path / "bench" / "results.csv")
    assert list(tidy.columns) == ["strategy", "seed", "cycle", "labeled", "map50_95", "map50"]
    assert len(tidy) == 2 * 2 * 3  # strategies x seeds x (2 cycles + final)
    assert sorted(tidy["labeled"].unique()) == [20, 28, 36]
    first = tidy[tidy["cycle"] == 1].pivot(index="seed", columns="strategy", values="map50_95")
    assert (first[variant] == first["entropy_sum"]).all()  # paired: same first-cycle detector per seed
    aucs = pd.read_csv(tmp_path / "bench" / "auc.csv")
    assert set(aucs["strategy"]) == {variant, "entropy_sum"}
    run = yaml.safe_load((tmp_path / "bench" / "runs" / "seed_1" / "random__lookup_table.records-5_agent.lr-0.01"
                          / "params.yaml").read_text())
    assert run["lookup_table"]["records"] == 5 and run["agent"]["lr"] == 0.01 and run["selection"]["seed"] == 1
    for name in ("learning_curves.png", "first_cycle_classes.png", "first_cycle_domains.png"):
        assert (tmp_path / "bench" / name).stat().st_size > 2000
    assert summary["seeds"] == [0, 1]
