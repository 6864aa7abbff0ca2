"""Prefect tasks for real labeling: import waiting annotations, export a batch, version the pool."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mgral_workspace import cycle_steps as steps
from mgral_workspace.annotation_import import import_inbox
from mgral_workspace.cold_start import ColdStartBatch, hand_out_cold_start
from mgral_workspace.config import Params
from tasks.events import IMPORTED_BY_CYCLE, emit_batch_labeled


@task(name="import-inbox")
def import_inbox_task(project_dir: str, min_labeled_fraction: float) -> dict:
    """Import the inbox; when that ends the wait for labels (`cycle_steps.wait_ended_by`), emit
    `mgral.batch.labeled` (as this cycle's)."""
    logger = get_run_logger()
    wait_before = steps.labeling_wait(project_dir, min_labeled_fraction)
    summary, errors = import_inbox(project_dir)
    if steps.wait_ended_by(wait_before, steps.labeling_wait(project_dir, min_labeled_fraction)):
        batch, labeled, total = steps.open_batch_progress(project_dir)
        emit_batch_labeled(project_dir, batch, labeled, total, IMPORTED_BY_CYCLE, logger)
    for error in errors:
        logger.warning(f"inbox: {error}")
    for warning in summary.warnings:
        logger.warning(f"inbox: {warning}")
    for note in summary.notes:
        logger.info(f"inbox: {note}")
    if summary.imported:
        logger.info(f"inbox: imported labels for {len(summary.imported)} images")
    return {"imported": len(summary.imported), "errors": errors}


@task(name="export-batch")
def export_batch_task(project_dir: str, params: Params, ids: list[str], cycle: int, inference_path: str,
                      weights: str) -> str:
    out = steps.hand_out_batch(project_dir, ids, cycle, Path(inference_path), f"mgral-cycle{cycle}:{Path(weights).name}",
                               params.annotation.prelabel_conf)
    get_run_logger().info(f"cycle {cycle}: batch of {len(ids)} images exported to {out}")
    return str(out)


@task(name="export-cold-start")
def export_cold_start_task(project_dir: str, batch: dict, gaps: list[str]) -> str:
    """Hand out a cold-start batch with its val/test images to label (`cold_start.hand_out_cold_start`)."""
    out = hand_out_cold_start(project_dir, ColdStartBatch(**batch), gaps)
    get_run_logger().info(f"cycle {batch['cycle']}: {len(batch['ids'])} pool images and {len(batch['eval_ids'])} "
                          f"val/test images exported to {out}; the next cycle trains once they are labeled")
    return str(out)
