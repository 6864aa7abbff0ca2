"""A lookup record that diverges fails alone, is not retried, and the table goes on with the rest;
a record that fails transiently (an OSError, say a full disk or a lost NFS mount) is retried once."""

import pytest

import mgral_workspace.record_values as record_values
from flows.lookup_table import build_lookup_table, lookup_task_runner
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import infer_pool, train_cycle_detector
from mgral_workspace.lookup_store import load_table
from tasks.mgral_tasks import lookup_dir, record_batches

pytestmark = pytest.mark.slow


def test_diverging_record_fails_alone_transient_failure_is_retried(tiny_project, prefect_harness, monkeypatch):
    params = load_params(tiny_project / "params.yaml", {"lookup_table.records": 4, "lookup_table.diagnostics": False,
                                                        "lookup_table.value": "proxy"})  # records that train
    detector = train_cycle_detector(tiny_project, params, 1)
    inference = infer_pool(tiny_project, detector.weights, params.detector, 1)
    batches = record_batches(str(tiny_project), params, 1, 8)
    calls = []
    real = record_values.record_value

    def diverging_for_record_2(project_dir, params, table_dir, record_id, *args, **kwargs):
        calls.append(record_id)
        if record_id == "record_002":
            raise FloatingPointError("head fine-tune diverged (loss nan)")
        if record_id == "record_001" and calls.count("record_001") == 1:
            raise OSError("stale file handle (transient)")
        return real(project_dir, params, table_dir, record_id, *args, **kwargs)

    monkeypatch.setattr(record_values, "record_value", diverging_for_record_2)  # lookup_record calls it there
    results = build_lookup_table.with_options(task_runner=lookup_task_runner(params))(
        str(tiny_project), params, 1, batches, str(detector.weights), str(inference))
    assert results[2] is None and all(r is not None for i, r in enumerate(results) if i != 2)
    assert calls.count("record_002") == 1  # a deterministic failure is not retried
    assert calls.count("record_001") == 2  # a transient one is retried once, then succeeds
    assert sorted(r.record_id for r in load_table(lookup_dir(str(tiny_project), 1)).records) == [
        "record_000", "record_001", "record_003"]
