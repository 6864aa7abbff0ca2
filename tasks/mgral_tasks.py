"""Prefect tasks of the lookup table: head features once per cycle, then records and their diagnostics (mapped)."""

from __future__ import annotations

import json
import os

import numpy as np
from prefect import get_run_logger, task
from tqdm.auto import tqdm

from mgral_core.lookup_table import LookupRecord, table_diagnostics
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import Params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.lookup_store import load_record, save_record
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info
from mgral_workspace.record_values import (
    cache_cycle_features,
    diagnostic_seeds,
    record_batches,
    record_value,
    true_label_record,
)
from mgral_workspace.selection import lookup_dir
from tasks.retry import transient_only

__all__ = ["head_features_task", "lookup_dir", "lookup_diagnostic_task", "lookup_record_task", "record_batches"]


@task(name="head-features", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def head_features_task(project_dir: str, params: Params, cycle: int, weights: str) -> str | None:
    """Cache the Detect-head inputs of L, the unlabeled pool and val once per cycle (head proxy only)."""
    if params.lookup_table.proxy != "head":
        return None
    n = len(PoolState.load(project_dir).table)
    with tqdm(total=n, desc="head features", unit="img", leave=False) as bar:
        path = cache_cycle_features(project_dir, params, weights, lookup_dir(project_dir, cycle), bar.update)
    get_run_logger().info(f"cycle {cycle}: head features cached in {path}")
    return str(path)


@task(name="lookup-record", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def lookup_record_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                       weights: str, inference_path: str) -> dict:
    table_dir, record_id = lookup_dir(project_dir, cycle), f"record_{record_index:03d}"
    done = load_record(table_dir, record_id)
    if done is not None:
        return {"record_id": record_id, "value": done.value, **done.extras}
    result = record_value(project_dir, params, table_dir, record_id, weights, batch_ids, inference_path)
    inference = load_inference(inference_path)
    value = result.pop("value")
    result["worker"] = _worker_name()
    save_record(table_dir, LookupRecord(record_id, np.asarray(batch_ids), inference.subset(batch_ids).embeddings,
                                        value, result))
    get_run_logger().info(f"{record_id}: proxy val mAP50-95 {value:.4f} ({result['seconds']} s on {result['worker']})")
    return {"record_id": record_id, "value": value, **result}


@task(name="lookup-diagnostic", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def lookup_diagnostic_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                           weights: str, inference_path: str) -> dict:
    """Signal-to-noise check of one record: its value under other seeds and (simulation) with true labels.

    Written to `<table>/diagnostics/record_NNN.json`; the estimator and the agent never read it.
    """
    table_dir, record_id = lookup_dir(project_dir, cycle), f"record_{record_index:03d}"
    path = table_dir / "diagnostics" / f"{record_id}.json"
    if path.exists():
        return json.loads(path.read_text())
    other = record_value(project_dir, params, table_dir, record_id, weights, batch_ids, inference_path,
                         seeds=diagnostic_seeds(params))
    out = {"record_id": record_id, "value_other_seeds": other["value"], "value_true_labels": None}
    if load_project_info(project_dir).simulate:
        out["value_true_labels"] = true_label_record(project_dir, params, table_dir, weights, batch_ids)["value"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, out)
    return out


def _worker_name() -> str:
    """The Dask worker's address when running on one, else 'local pid N'."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local pid {os.getpid()}"


@task(name="record-batches")
def record_batches_task(project_dir: str, params: Params, cycle: int, budget: int, inference_path: str
                        ) -> list[list[str]]:
    """The cycle's record batches (see `mgral_workspace.record_values.record_batches`)."""
    return record_batches(project_dir, params, cycle, budget, inference_path)


@task(name="table-diagnostics")
def table_diagnostics_task(project_dir: str, cycle: int, records: list[dict | None], checks: list[dict | None]
                           ) -> dict:
    """The table's repeatability and fidelity (`table_diagnostics`), written to <table>/diagnostics.json."""
    summary = table_diagnostics(records, checks)
    write_json_atomic(lookup_dir(project_dir, cycle) / "diagnostics.json", summary)
    return summary
