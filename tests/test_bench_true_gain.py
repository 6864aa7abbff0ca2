"""bench/true_gain_vs_records.py on a tiny finished benchmark of the default MGRAL: the batches it compares are
the campaign's own, its training is the benchmark's (the selected batch retrained with the cell's seed gives
the cell's result to the last digit), a record's batch is trained with the oracle's labels without touching
the project, and a second run resumes without training, unless a result is of another batch."""

import json
import sys

import pytest
import yaml

from flows.benchmark import mgral_benchmark
from mgral_workspace.benchmark import cell_path, run_dir
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import train_counterfactual_detector
from mgral_workspace.pool import PoolStateError
from mgral_workspace.project import load_project_info
from mgral_workspace.lookup_store import load_table
from mgral_workspace.selection import lookup_dir
from tests.conftest import load_bench_script, write_params

pytestmark = pytest.mark.slow


def test_true_gain_compares_the_campaigns_batches_trained_as_the_benchmark_trains(tmp_path, prefect_harness,
                                                                                  monkeypatch):
    params_file = write_params(tmp_path / "params.yaml")
    data = yaml.safe_load(params_file.read_text())
    data["benchmark"]["quick"].update({"n_pool": 60, "image_size": 64, "epochs": 2, "finetune_epochs": 1,
                                       "budget": 8, "lookup_records": 3, "agent_iterations": 5, "cycles": 2,
                                       "finetune_repeats": 1})
    params_file.write_text(yaml.safe_dump(data))
    bench_dir = tmp_path / "bench"
    mgral_benchmark(str(bench_dir), "quick", str(params_file), ["mgral"], [0])
    bench = load_bench_script("true_gain_vs_records")
    project = run_dir(bench_dir, "mgral", 0)
    params = load_params(project / "params.yaml")
    assert params.lookup_table.value == "class_gain"  # the default MGRAL

    labeled, three = bench.cycle_batches(project, 2)
    records = load_table(lookup_dir(project, 2)).records
    best = max(records, key=lambda r: r.value)
    assert three["best_record"][1] == best.value and sorted(three["best_record"][0]) == sorted(best.batch_ids)
    assert sorted(three["random_record"][0]) == sorted(records[0].batch_ids)
    assert len(three["mgral"][0]) == 8 and not set(three["mgral"][0]) & set(labeled)
    retrained = bench.fine_tune(project, params, 2, three["mgral"][0], 0, tmp_path / "again")
    assert retrained["map50_95"] == json.loads(cell_path(project, 3).read_text())["map50_95"]
    assert not (tmp_path / "again").exists()  # weights dropped once scored

    # a record's batch is trained with the oracle's labels, beside the project, which does not change
    pool_before = (project / "pool.csv").read_bytes()
    record = sorted(best.batch_ids.astype(str))
    trained = train_counterfactual_detector(project, params, 3, record, tmp_path / "cf", seed=1, log=lambda _: None)
    assert trained.weights.exists() and (project / "pool.csv").read_bytes() == pool_before
    oracle = load_project_info(project).oracle_dir
    for image_id in record:
        assert (tmp_path / "cf" / "view" / "labels" / f"{image_id}.txt").read_bytes() == (
            oracle / f"{image_id}.txt").read_bytes()
    assert len(list((tmp_path / "cf" / "view" / "images").iterdir())) == len(labeled) + len(record)
    with pytest.raises(PoolStateError, match="labeled before cycle 2 or not pool images"):
        train_counterfactual_detector(project, params, 3, [labeled[0]], tmp_path / "bad", seed=1)
    with pytest.raises(PoolStateError, match="cycle >= 2"):
        train_counterfactual_detector(project, params, 1, record, tmp_path / "bad", seed=1)

    argv = ["true_gain_vs_records.py", "--bench", str(bench_dir), "--repeats", "2", "--workers", "1",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "result.json")]
    monkeypatch.setattr(sys, "argv", argv)
    result = bench.main()
    assert result["strategy"] == "mgral" and result["fine_tunes_run"] == 2 * (2 * 2 + 1)  # 2 cycles
    assert [(row["seed"], row["cycle"]) for row in result["rows"]] == [(0, 1), (0, 2)]
    assert result["rows"][1]["best_record_table_value"] == best.value
    assert json.loads((tmp_path / "result.json").read_text())["rows"] == result["rows"]
    again = bench.main()  # everything finished is reused
    assert again["fine_tunes_run"] == 0 and again["rows"] == result["rows"]
    # a result of another batch at the same place (another strategy's campaign, one --work) is trained again
    other = tmp_path / "work" / "seed_0" / "cycle_2" / "best_record_repeat_1.json"
    trained_before = json.loads(other.read_text())
    other.write_text(json.dumps({**trained_before, "map50_95": 0.999, "batch_digest": "another batch"}))
    assert bench.reusable(other, bench.batch_digest(labeled, three["best_record"][0])) is False
    mended = bench.main()
    assert mended["fine_tunes_run"] == 1 and mended["rows"] == result["rows"]  # retrained, the same figure
    assert bench.batch_digest(labeled, three["best_record"][0]) != bench.batch_digest(labeled, three["mgral"][0])

    # bench/domain_breakdown.py on the same campaign: the domains of every labeled cycle, and the last
    # detector's test mAP on each domain, whose 'all' is the campaign's own evaluation
    domains = load_bench_script("domain_breakdown")
    monkeypatch.setattr(sys, "argv", ["domain_breakdown.py", "--bench", str(bench_dir), "--out",
                                      str(tmp_path / "domains.json")])
    breakdown = domains.main()
    (row,) = breakdown["rows"]
    assert row["cycle"] == 3 and {c: sum(v.values()) for c, v in row["batches"].items()} == {
        0: len(labeled) - 8, 1: 8, 2: 8}
    evaluation = json.loads((project / "cycles" / "cycle_003" / "evaluation.json").read_text())
    assert row["test_map50_95"]["all"] == pytest.approx(evaluation["map50_95"])
    assert set(row["test_map50_95"]) - {"all"} <= {"clean", "cluttered", "degraded"}
    assert breakdown["comparisons"] == {}  # no random campaign to compare with
    assert sorted(row["coverage"]) == [1, 2] and all(0 <= g["labeled_gap"] <= 1 for g in row["coverage"].values())
    (tmp_path / "nometa").mkdir()
    with pytest.raises(SystemExit, match="no metadata.csv"):
        domains.domains_of(tmp_path / "nometa")
