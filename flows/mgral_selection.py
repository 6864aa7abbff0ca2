"""MGRAL selection inside a cycle: lookup table (mapped tasks), then agent training and top-k."""

from __future__ import annotations

from prefect import get_run_logger

from flows.lookup_table import build_lookup_table, lookup_task_runner

from mgral_core import cycle as steps
from mgral_core.config import Params
from tasks.mgral_tasks import record_batches, train_agent_task


def select_mgral(project_dir: str, params: Params, inference_path: str, cycle: int, budget: int,
                 run_id: str, weights: str) -> list[str]:
    cached = steps.load_selection(project_dir, cycle)
    if cached is not None:
        return cached
    batches = record_batches(project_dir, params, cycle, budget, inference_path)
    get_run_logger().info(f"cycle {cycle}: building a lookup table of {len(batches)} records")
    build_lookup_table.with_options(task_runner=lookup_task_runner(params))(
        project_dir, params, cycle, batches, weights, inference_path)
    ids = train_agent_task(project_dir, params, cycle, budget, weights, inference_path, run_id)
    steps.save_selection(project_dir, cycle, ids, "mgral")
    return ids
