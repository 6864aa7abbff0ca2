"""Prefect tasks of the lookup table: head features once per cycle, then records and their diagnostics (mapped)."""

from __future__ import annotations

import os

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from mgral_core.lookup_table import table_diagnostics
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import Params
from mgral_workspace.pool import PoolState
from mgral_workspace.record_values import (
    cache_cycle_features,
    lookup_record,
    record_batches,
    record_check,
    record_plan,
)
from mgral_workspace.reward_chain import reward_chain
from mgral_workspace.selection import lookup_dir
from tasks.retry import transient_only

__all__ = ["head_features_task", "lookup_dir", "lookup_diagnostic_task", "lookup_record_task", "record_batches"]


@task(name="head-features", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def head_features_task(project_dir: str, params: Params, cycle: int, weights: str) -> str | None:
    """Cache the Detect-head inputs of L, the unlabeled pool and val once per cycle (head proxy only)."""
    table = params.lookup_table
    if table.proxy != "head" or (table.value != "proxy" and not table.diagnostics):
        return None  # no head-proxy training this cycle (the diagnostics' true-label records need the features)
    n = len(PoolState.load(project_dir).table)
    with tqdm(total=n, desc="head features", unit="img", leave=False) as bar:
        path = cache_cycle_features(project_dir, params, weights, lookup_dir(project_dir, cycle), bar.update)
    get_run_logger().info(f"cycle {cycle}: head features cached in {path}")
    return str(path)


@task(name="lookup-record", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def lookup_record_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                       weights: str, inference_path: str, design: dict | None = None) -> dict:
    """One record of the table (`record_values.lookup_record`); `design` (kind, source of the batch) to its extras."""
    result = lookup_record(project_dir, params, lookup_dir(project_dir, cycle), record_index, batch_ids, weights,
                           inference_path, design, worker=_worker_name())
    if not result.get("reused"):
        what = {"proxy": "proxy val mAP50-95", "expected_objects": "expected objects per image",
                "class_gain": "class gain"}[params.lookup_table.value]
        get_run_logger().info(f"{result['record_id']}: {what} {result['value']:.4f} "
                              f"({result['seconds']} s on {result['worker']})")
    return result


@task(name="lookup-diagnostic", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def lookup_diagnostic_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                           weights: str, inference_path: str) -> dict:
    """Signal-to-noise check of one record (`record_values.record_check`): other seeds and (simulation) true labels.

    Written to `<table>/diagnostics/record_NNN.json`; the estimator and the agent never read it.
    """
    return record_check(project_dir, params, lookup_dir(project_dir, cycle), record_index, batch_ids, weights,
                        inference_path)


def _worker_name() -> str:
    """The Dask worker's address when running on one, else 'local pid N'."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local pid {os.getpid()}"


@task(name="record-batches")
def record_batches_task(project_dir: str, params: Params, cycle: int, budget: int, inference_path: str
                        ) -> list[dict]:
    """The cycle's record batches and their kinds (see `mgral_workspace.record_values.record_plan`)."""
    return record_plan(project_dir, params, cycle, budget, inference_path)


@task(name="table-diagnostics")
def table_diagnostics_task(project_dir: str, cycle: int, records: list[dict | None], checks: list[dict | None]
                           ) -> dict:
    """The table's repeatability and fidelity (`table_diagnostics`), written to <table>/diagnostics.json."""
    summary = table_diagnostics(records, checks)
    write_json_atomic(lookup_dir(project_dir, cycle) / "diagnostics.json", summary)
    return summary


@task(name="reward-chain")
def reward_chain_task(project_dir: str, params: Params, cycle: int, budget: int, weights: str, inference_path: str
                      ) -> dict:
    """Links a to e of the reward's measurement chain (`mgral_workspace.reward_chain`), written to the cycle dir;
    returns the metrics and artifacts to log. Simulation-only diagnostic, after the selection is saved."""
    outputs = reward_chain(project_dir, params, cycle, budget, weights, inference_path)
    m = outputs["metrics"]

    def shown(name: str) -> str:
        return "n/a" if m.get(name) is None else f"{m[name]:.3f}"

    get_run_logger().info(
        f"cycle {cycle}: reward chain (diagnostic only) — a repeatability {shown('chain_repeatability')}, "
        f"b fidelity on diverse batches {shown('chain_fidelity_diverse')}, c LOO {shown('chain_loo_spearman')}, "
        f"d agent - reference {shown('chain_agent_minus_reference')}, e MGRAL - best record "
        f"{shown('chain_mgral_minus_best_record')}, MGRAL - ceiling {shown('chain_mgral_minus_ceiling')}; "
        f"{int(m['chain_targets_met'])}/{int(m['chain_targets_checked'])} targets met")
    return outputs
