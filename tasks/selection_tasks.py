"""Prefect tasks that pick the next batch with a baseline strategy and hand it to the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from mgral_core import cycle as steps
from mgral_core.config import Params
from mgral_core.strategies import get_strategy


@task(name="select-batch")
def select_baseline_task(project_dir: str, params: Params, inference_path: str, cycle: int,
                         strategy: str, budget: int) -> list[str]:
    cached = steps.load_selection(project_dir, cycle)
    if cached is not None:
        return cached
    view = steps.pool_view(project_dir, Path(inference_path))
    rng = np.random.default_rng([params.selection.seed, cycle])
    ids = get_strategy(strategy)(view, min(budget, len(view.unlabeled_ids)), rng)
    steps.save_selection(project_dir, cycle, ids, strategy)
    get_run_logger().info(f"cycle {cycle}: {strategy} selected {len(ids)} of {len(view.unlabeled_ids)} images")
    return ids


@task(name="oracle-annotate")
def oracle_annotate_task(project_dir: str, ids: list[str], cycle: int) -> dict:
    pool = steps.oracle_annotate(project_dir, ids, cycle)
    get_run_logger().info(f"cycle {cycle}: oracle labeled {len(ids)} images; pool now {pool.counts()}")
    return pool.counts()
