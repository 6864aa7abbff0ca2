"""The `mgral-lookup-table` flow: train the cycle's lookup-table records in parallel.

Runs on local threads by default or on a Dask cluster (prefect-dask) when `lookup_table.runner`
is `dask`: an existing scheduler (`dask_address` or MGRAL_DASK_ADDRESS) or a local cluster of
worker processes. Records travel as paths; workers need the project directory on shared storage.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from mgral_workspace.config import Params
from tasks.interrupts import children_stop_when_interrupted
from tasks.mgral_tasks import (
    head_features_task,
    lookup_diagnostic_task,
    lookup_record_task,
    record_batches_task,
    table_diagnostics_task,
)


def lookup_task_runner(params: Params):
    table = params.lookup_table
    address = os.environ.get("MGRAL_DASK_ADDRESS") or table.dask_address
    if table.runner == "dask" or address:
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": table.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "host": "127.0.0.1", "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=int(os.environ.get("MGRAL_MAX_WORKERS", table.max_workers)))


@flow(name="mgral-lookup-table")
def build_lookup_table(project_dir: str, params: Params, cycle: int, batches: list[list[str]], weights: str,
                       inference_path: str, designs: list[dict] | None = None) -> list[dict | None]:
    """Train one record per batch; returns each record's summary, or None where it failed.

    `designs[i]` (kind, source, swap fraction of batch i; `record_plan`) is kept in record i's extras.

    With `lookup_table.diagnostics` (head proxy), every record is trained again with other seeds
    and, in simulation, with the oracle's labels of its batch; the table's repeatability and
    fidelity go to `<table>/diagnostics.json` (logged to MLflow by the agent task).
    """
    logger = get_run_logger()
    head_features_task(project_dir, params, cycle, weights)
    args = (unmapped(project_dir), unmapped(params), unmapped(cycle), list(range(len(batches))), batches,
            unmapped(weights), unmapped(inference_path))
    designs = [None] * len(batches) if designs is None else designs
    with children_stop_when_interrupted():  # records train in children: stopped at once on SIGTERM
        results = [f.result(raise_on_failure=False) for f in lookup_record_task.map(*args, designs)]
    results = [r if isinstance(r, dict) else None for r in results]
    failed = sum(r is None for r in results)
    if failed:
        logger.warning(f"cycle {cycle}: {failed} of {len(batches)} lookup records failed; continuing with the rest")
    if params.lookup_table.diagnostics and params.lookup_table.proxy == "head":
        with children_stop_when_interrupted():
            checks = [f.result(raise_on_failure=False) for f in lookup_diagnostic_task.map(*args)]
        summary = table_diagnostics_task(project_dir, cycle, results, [c if isinstance(c, dict) else None
                                                                       for c in checks])
        shown = {name: "n/a" if summary[name] is None else f"{summary[name]:.3f}"
                 for name in ("repeatability", "fidelity")}
        logger.info(f"cycle {cycle}: lookup table repeatability {shown['repeatability']}, fidelity "
                    f"{shown['fidelity']} over {summary['records']} records (Spearman; diagnostics only, "
                    "not used by selection)")
    return results


def fill_lookup_table(project_dir: str, params: Params, cycle: int, budget: int, weights: str,
                      inference_path: str) -> None:
    """The cycle's record batches, then the lookup-table subflow on the configured task runner."""
    plan = record_batches_task(project_dir, params, cycle, budget, inference_path)
    get_run_logger().info(f"cycle {cycle}: building a lookup table of {len(plan)} records "
                          f"({params.lookup_table.batch_sampling} batches)")
    build_lookup_table.with_options(task_runner=lookup_task_runner(params))(
        project_dir, params, cycle, [p["ids"] for p in plan], weights, inference_path, plan)
