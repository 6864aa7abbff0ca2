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
