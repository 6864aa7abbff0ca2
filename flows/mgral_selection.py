"""MGRAL selection inside a cycle: lookup table (mapped tasks), then agent training and top-k."""

from __future__ import annotations

from prefect import get_run_logger, unmapped

from mgral_core import cycle as steps
from mgral_core.config import Params
from tasks.mgral_tasks import lookup_record_task, record_batches, train_agent_task


def select_mgral(project_dir: str, params: Params, inference_path: str, cycle: int, budget: int,
                 run_id: str, weights: str) -> list[str]:
    cached = steps.load_selection(project_dir, cycle)
    if cached is not None:
        return cached
    batches = record_batches(project_dir, params, cycle, budget)
    get_run_logger().info(f"cycle {cycle}: building a lookup table of {len(batches)} records")
    futures = lookup_record_task.map(unmapped(project_dir), unmapped(params), unmapped(cycle),
                                     list(range(len(batches))), batches, unmapped(weights), unmapped(inference_path))
    values = [f.result(raise_on_failure=False) for f in futures]
    failed = sum(1 for v in values if not isinstance(v, float))
    if failed:
        get_run_logger().warning(f"cycle {cycle}: {failed} lookup records failed; continuing with the rest")
    ids = train_agent_task(project_dir, params, cycle, budget, weights, inference_path, run_id)
    steps.save_selection(project_dir, cycle, ids, "mgral")
    return ids
