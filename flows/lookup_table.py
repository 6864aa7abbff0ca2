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

from mgral_core.config import Params
from tasks.mgral_tasks import lookup_record_task


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
                       inference_path: str) -> list[dict | None]:
    """Train one record per batch; returns each record's summary, or None where it failed."""
    futures = lookup_record_task.map(unmapped(project_dir), unmapped(params), unmapped(cycle),
                                     list(range(len(batches))), batches, unmapped(weights), unmapped(inference_path))
    results = [f.result(raise_on_failure=False) for f in futures]
    results = [r if isinstance(r, dict) else None for r in results]
    failed = sum(r is None for r in results)
    if failed:
        get_run_logger().warning(f"cycle {cycle}: {failed} of {len(batches)} lookup records failed; "
                                 "continuing with the rest")
    return results
