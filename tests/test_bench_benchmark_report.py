"""bench/benchmark_report.py's table diagnostic: record values against their batches' object counts."""

import json

import numpy as np

from tests.conftest import load_bench_script


def _report():
    return load_bench_script("benchmark_report")


def test_value_vs_objects_ranks_record_values_against_oracle_object_counts(tmp_path):
    report = _report()
    project, table = tmp_path / "project", tmp_path / "project" / "cycles" / "cycle_001" / "lookup_table"
    (project / "oracle" / "labels").mkdir(parents=True)
    table.mkdir(parents=True)
    for image, boxes in {"a": 0, "b": 1, "c": 3, "d": 6}.items():
        (project / "oracle" / "labels" / f"{image}.txt").write_text("0 0.5 0.5 0.1 0.1\n" * boxes)
    batches = {"record_000": (["a", "b"], 0.30), "record_001": (["b", "c"], 0.20), "record_002": (["c", "d"], 0.10)}
    for name, (ids, value) in batches.items():  # fewer objects, higher value: Spearman -1
        (table / f"{name}.json").write_text(json.dumps({"record_id": name, "value": value, "batch_size": 2}))
        np.savez(table / f"{name}.npz", batch_ids=np.array(ids), embeddings=np.zeros((2, 4)))
    (table / "fallback_x.json").write_text(json.dumps({"value": 9.0}))  # not a record of the design
    assert report.value_vs_objects(table.parent, project) == -1.0
    (project / "oracle" / "labels" / "d.txt").unlink()
    assert report.value_vs_objects(table.parent, project) is None  # no oracle: not a simulation


def test_pair_with_adds_an_earlier_runs_strategies_only_when_shared_cells_agree():
    import pandas as pd
    import pytest

    report = _report()
    def rows(strategy, values):
        return [{"strategy": strategy, "seed": seed, "cycle": 2, "labeled": 200, "map50_95": v, "map50": 2 * v}
                for seed, v in enumerate(values)]
    new = pd.DataFrame(rows("random", [0.1, 0.2]) + rows("mgral@x=1", [0.15, 0.25]))
    earlier = pd.DataFrame(rows("random", [0.1, 0.2]) + rows("cdal", [0.3, 0.4, 0.5]))  # a third seed: dropped
    joined = report.pair_with(new, earlier, "earlier.csv")
    assert sorted(joined["strategy"].unique()) == ["cdal", "mgral@x=1", "random"]
    assert joined[joined["strategy"] == "cdal"]["map50_95"].tolist() == [0.3, 0.4]
    assert len(joined[joined["strategy"] == "random"]) == 2  # shared cells are not doubled
    other = earlier.assign(map50_95=earlier["map50_95"].where(earlier["strategy"] != "random", 0.11))
    with pytest.raises(SystemExit, match="random seed 0 cycle 2 is 0.100000 here and 0.110000 there"):
        report.pair_with(new, other, "other.csv")
    with pytest.raises(SystemExit, match="no \\(strategy, seed, cycle\\) cell in common"):
        report.pair_with(new, earlier[earlier["strategy"] == "cdal"], "cdal_only.csv")
    with pytest.raises(SystemExit, match="cdal lacks seeds \\[1\\]"):
        report.pair_with(new, earlier[(earlier["strategy"] == "random") | (earlier["seed"] == 0)], "short.csv")


def test_all_cells_reads_every_finished_campaign_of_every_seed_folder(tmp_path, capsys):
    """--all-seeds: campaigns of seeds from any run of the folder, the unfinished one named and left out."""
    import pytest

    report = _report()
    (tmp_path / "plan.json").write_text(json.dumps({"cycles": 1, "seeds": [2], "strategies": ["random"]}))

    def campaign(seed, folder, strategy, cycles):
        cells = tmp_path / "runs" / f"seed_{seed}" / folder / "cells"
        cells.mkdir(parents=True)
        for cycle in range(1, cycles + 1):
            (cells / f"cycle_{cycle:03d}.json").write_text(json.dumps(
                {"strategy": strategy, "seed": seed, "cycle": cycle, "labeled": 100 * cycle,
                 "map50_95": 0.1 * cycle + seed / 100, "map50": 0.2, "seconds": 3.0}))
        (cells / "mlflow_run.json").write_text("{}")

    for seed in (0, 1, 2):
        campaign(seed, "random", "random", 2)
    campaign(0, "mgral__x-1", "mgral@x=1", 2)
    campaign(1, "mgral__x-1", "mgral@x=1", 1)  # interrupted after its first cycle
    tidy = report.all_cells(tmp_path)
    assert sorted(map(tuple, tidy[["strategy", "seed"]].drop_duplicates().to_numpy().tolist())) == [
        ("mgral@x=1", 0), ("random", 0), ("random", 1), ("random", 2)]
    assert tidy.loc[(tidy["seed"] == 2) & (tidy["cycle"] == 2), "map50_95"].item() == pytest.approx(0.22)
    assert "left out, not finished: mgral__x-1 seed 1 (1/2 cells)" in capsys.readouterr().out
    assert set(report.all_cells(tmp_path, seeds={1, 2})["seed"]) == {1, 2}
    assert set(report.all_cells(tmp_path, strategies={"random"})["strategy"]) == {"random"}
    with pytest.raises(SystemExit, match="no finished campaign of \\['cdal'\\]"):
        report.all_cells(tmp_path, strategies={"random", "cdal"})
    assert report.parse_seeds("0-2,5") == {0, 1, 2, 5}
    with pytest.raises(SystemExit, match="--seeds: 'a' is not a seed"):
        report.parse_seeds("a")
    with pytest.raises(SystemExit, match="--seeds: '5-3' is an empty range"):
        report.parse_seeds("5-3")
    mgral_cycle = tmp_path / "runs" / "seed_1" / "mgral__x-1" / "cycles" / "cycle_001"
    mgral_cycle.mkdir(parents=True)
    (mgral_cycle / "mgral_summary.json").write_text(json.dumps({"lookup_records": 4}))
    assert report.mgral_table(tmp_path, {("mgral__x-1", 0)}).empty  # seed 1's campaign is not in the tables
    assert report.mgral_table(tmp_path, {("mgral__x-1", 1)})["records"].tolist() == [4]
    (tmp_path / "plan.json").write_text(json.dumps({"cycles": 1, "seeds": [2], "finetune_repeats": 3}))
    with pytest.raises(SystemExit, match="repeated them \\(3\\); report it without --all-seeds"):
        report.all_cells(tmp_path)
