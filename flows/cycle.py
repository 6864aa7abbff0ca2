"""The `mgral` flow: one active-learning cycle (train, evaluate, embed, select, annotate)."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.mgral_selection import select_mgral
from flows.params import resolve_params
from mgral_core.pool import PoolState
from tasks import tracking
from tasks.detector_tasks import evaluate_task, infer_pool_task, train_detector_task
from tasks.reporting_tasks import log_cycle_task
from tasks.selection_tasks import oracle_annotate_task, select_baseline_task


@flow(name="mgral", log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=int(os.environ.get("MGRAL_MAX_WORKERS", "2"))))
def mgral_cycle(project_dir: str, strategy: str | None = None, budget: int | None = None,
                params_file: str | None = None, parent_run_id: str | None = None,
                select: bool = True) -> dict:
    """Run one cycle on a project; in simulation the oracle labels the selected batch at once.

    Args:
        project_dir: a directory made by `mgral init`.
        strategy: selection strategy name (default: selection.strategy in the params).
        budget: images to select (default: selection.budget).
        params_file: parameter file (default: the project's params.yaml).
        parent_run_id: MLflow run of a campaign this cycle belongs to.
        select: False trains and evaluates only (the last point of a campaign's learning curve).
    """
    logger = get_run_logger()
    params = resolve_params(project_dir, params_file, strategy=strategy, budget=budget)
    strategy, budget = params.selection.strategy, params.selection.budget
    pool = PoolState.load(project_dir)
    cycle = pool.current_cycle + 1
    labeled = len(pool.labeled_pool_ids)
    run_id = tracking.start_run(project_dir, params, f"cycle {cycle}" if select else "final",
                                {"strategy": strategy, "cycle": str(cycle)}, parent_run_id)
    try:
        tracking.log_params(project_dir, params, run_id, tracking.flat_params(params))
        detector = train_detector_task(project_dir, params, cycle)
        evaluation = evaluate_task(project_dir, params, detector["weights"], "test")
        selected: list[str] = []
        if select and len(pool.unlabeled_pool_ids) > 0:
            inference = infer_pool_task(project_dir, params, detector["weights"], cycle)
            if strategy == "mgral":
                selected = select_mgral(project_dir, params, inference, cycle, budget, run_id, detector["weights"])
            else:
                selected = select_baseline_task(project_dir, params, inference, cycle, strategy, budget)
            oracle_annotate_task(project_dir, selected, cycle)
        elif select:
            logger.warning(f"cycle {cycle}: the unlabeled pool is empty; nothing to select")
        log_cycle_task(project_dir, params, run_id, cycle, labeled, evaluation, detector, selected, strategy)
    except BaseException:
        tracking.end_run(project_dir, params, run_id, "FAILED")
        raise
    tracking.end_run(project_dir, params, run_id)
    logger.info(f"cycle {cycle} done: {labeled} labeled, test mAP50-95 {evaluation['map50_95']:.4f}; "
                f"MLflow run {run_id}")
    return {"cycle": cycle, "labeled": labeled, "strategy": strategy, "run_id": run_id,
            "map50_95": evaluation["map50_95"], "map50": evaluation["map50"], "selected": selected,
            "per_class": evaluation["per_class"], "project_dir": str(Path(project_dir).resolve())}
