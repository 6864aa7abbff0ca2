"""The `mgral` flow: one active-learning cycle (train, evaluate, embed, select, annotate or export)."""

import os
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from flows.lookup_table import fill_lookup_table
from flows.params import resolve_params
from mgral_core.strategies import STRATEGY_NAMES, needs_lookup_table
from mgral_workspace import cycle_steps as steps
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info
from mgral_workspace.project_lock import project_lock
from mgral_workspace.reward_chain import chain_wanted
from mgral_workspace.selection import check_strategy_allowed
from tasks.annotation_tasks import export_batch_task, export_cold_start_task, import_inbox_task
from tasks.detector_tasks import detector_health_task, evaluate_task, infer_pool_task, train_detector_task
from tasks.mgral_tasks import reward_chain_task
from tasks.reporting_tasks import log_cycle_task
from tasks.selection_tasks import cold_start_select_task, oracle_annotate_task, select_batch_task
from tasks.tracking_tasks import (
    end_run_task,
    log_detector_health_task,
    log_strategy_outputs_task,
    register_detector_task,
    set_tags_task,
    start_run_task,
)
from tasks.versioning import version_pool_task

# Evaluated annotations (no `from __future__ import annotations` here): Prefect builds the parameter
# model from the signature in whatever process runs the flow, where a string 'StrategyName' may not resolve.
StrategyName = Literal[STRATEGY_NAMES]  # a drop-down in the Prefect UI's run form
Budget = Annotated[int, Field(ge=1)]


@flow(name="mgral", log_prints=True)
def mgral_cycle(project_dir: str, strategy: StrategyName | None = None, budget: Budget | None = None,
                params_file: str | None = None, parent_run_id: str | None = None,
                select: bool = True, register_detector: bool = True) -> dict:
    """Run one cycle on a project.

    Simulation: the oracle labels the selected batch at once. Real use: annotations waiting in
    project/inbox are imported first; while the open batch is less labeled than
    annotation.min_labeled_fraction the cycle only reports progress and stops; otherwise it
    trains, selects, exports the new batch for annotators and marks it pending.

    Args:
        project_dir: a directory made by `mgral init`.
        strategy: selection strategy name (default: selection.strategy in the params).
        budget: images to select (default: selection.budget).
        params_file: parameter file (default: the project's params.yaml).
        parent_run_id: MLflow run of a campaign this cycle belongs to.
        select: False trains and evaluates only (the last point of a campaign's learning curve).
        register_detector: False keeps the detector out of the MLflow Model Registry (a campaign's cycles);
            True registers it when tracking.register_detector is set.
    """
    with project_lock(project_dir, "mgral cycle", wait_seconds=float(os.environ.get("MGRAL_LOCK_WAIT", "0"))):
        return _run_cycle(project_dir, strategy, budget, params_file, parent_run_id, select, register_detector)


def _run_cycle(project_dir: str, strategy: str | None, budget: int | None, params_file: str | None,
               parent_run_id: str | None, select: bool, register_detector: bool) -> dict:
    logger = get_run_logger()
    params = resolve_params(project_dir, params_file, strategy=strategy, budget=budget)
    strategy, budget = params.selection.strategy, params.selection.budget
    check_strategy_allowed(project_dir, strategy)  # the oracle ceiling is refused before anything trains
    simulate = load_project_info(project_dir).simulate
    if not simulate:
        import_inbox_task(project_dir, params.annotation.min_labeled_fraction)
        message = steps.labeling_wait(project_dir, params.annotation.min_labeled_fraction)
        if message:
            logger.info(message)
            batch_cycle, done, total = steps.open_batch_progress(project_dir)
            return {"status": "waiting", "message": message, "cycle": batch_cycle, "labeled_in_batch": done,
                    "batch_size": total, "project_dir": str(Path(project_dir).resolve())}
        gaps = steps.training_gaps(PoolState.load(project_dir))
        if gaps and select:
            return _cold_start_cycle(project_dir, params, budget, gaps, parent_run_id)
    pool = PoolState.load(project_dir)
    cycle = pool.current_cycle + 1
    labeled = len(pool.labeled_pool_ids)
    run_id = start_run_task(project_dir, params, f"cycle {cycle}" if select else "final",
                            {"strategy": strategy, "cycle": str(cycle)}, parent_run_id)
    export = registered = None
    try:
        detector = train_detector_task(project_dir, params, cycle)
        evaluation = evaluate_task(project_dir, params, detector["weights"], "test", cycle, labeled)
        if register_detector and params.tracking.register_detector:
            registered = register_detector_task(project_dir, params, run_id, detector["weights"],
                                                evaluation["map50_95"], cycle)
        selected: list[str] = []
        inference = None
        if select and len(pool.unlabeled_pool_ids) > 0:
            inference = infer_pool_task(project_dir, params, detector["weights"], cycle)
        warnings = detector_health_task(project_dir, cycle, detector["val_map50_95"], inference)
        log_detector_health_task(project_dir, params, run_id, warnings)
        if inference is not None:
            if needs_lookup_table(strategy) and steps.load_selection(project_dir, cycle) is None:
                fill_lookup_table(project_dir, params, cycle, budget, detector["weights"], inference)
            selected, outputs = select_batch_task(project_dir, params, inference, cycle, strategy, budget,
                                                  detector["weights"])
            log_strategy_outputs_task(project_dir, params, run_id, outputs)
            if chain_wanted(params, strategy, simulate):  # diagnostic: reads the oracle once the batch is saved
                log_strategy_outputs_task(project_dir, params, run_id, reward_chain_task(
                    project_dir, params, cycle, budget, detector["weights"], inference))
            if simulate:
                oracle_annotate_task(project_dir, selected, cycle)
            else:
                export = export_batch_task(project_dir, params, selected, cycle, inference, detector["weights"])
            version_pool_task(project_dir, params, f"cycle {cycle}: {strategy} selected {len(selected)} images")
        elif select:
            logger.warning(f"cycle {cycle}: the unlabeled pool is empty; nothing to select")
        log_cycle_task(project_dir, params, run_id, cycle, labeled, evaluation, detector, selected, strategy)
    except BaseException:
        end_run_task(project_dir, params, run_id, "FAILED")
        raise
    end_run_task(project_dir, params, run_id)
    logger.info(f"cycle {cycle} done: {labeled} labeled, test mAP50-95 {evaluation['map50_95']:.4f}; "
                f"MLflow run {run_id}" + (f"; batch exported to {export}" if export else ""))
    return {"status": "exported" if export else "done", "cycle": cycle, "labeled": labeled, "strategy": strategy,
            "run_id": run_id, "map50_95": evaluation["map50_95"], "map50": evaluation["map50"],
            "selected": selected, "per_class": evaluation["per_class"], "export": export, "warnings": warnings,
            "registered": registered, "project_dir": str(Path(project_dir).resolve())}


def _cold_start_cycle(project_dir: str, params, budget: int, gaps: list[str], parent_run_id: str | None) -> dict:
    """A cycle that cannot train yet: select without a detector, hand the batch out with the val/test images."""
    cycle = PoolState.load(project_dir).current_cycle + 1
    run_id = start_run_task(project_dir, params, f"cycle {cycle} (cold start)",
                            {"strategy": "cold_start", "cycle": str(cycle)}, parent_run_id)
    try:
        batch = cold_start_select_task(project_dir, params, cycle, budget)
        export = export_cold_start_task(project_dir, batch, gaps)
        set_tags_task(project_dir, params, run_id, {"mgral.selection": batch["reason"],
                                                    "mgral.waiting_for": "; ".join(gaps)})
        version_pool_task(project_dir, params, f"cycle {cycle}: cold start, {batch['method']} selected "
                                               f"{len(batch['ids'])} images (+ {len(batch['eval_ids'])} val/test)")
    except BaseException:
        end_run_task(project_dir, params, run_id, "FAILED")
        raise
    end_run_task(project_dir, params, run_id)
    return {"status": "exported", "cold_start": True, "cycle": cycle, "labeled": 0, "strategy": "cold_start",
            "method": batch["method"], "reason": batch["reason"], "selected": batch["ids"],
            "eval_to_label": batch["eval_ids"], "waiting_for": gaps, "export": export, "run_id": run_id,
            "warnings": [], "project_dir": str(Path(project_dir).resolve())}
