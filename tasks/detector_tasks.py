"""Prefect tasks around the detector: train, evaluate, run over the pool."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from mgral_workspace import cycle_steps as steps
from mgral_workspace.config import Params
from mgral_workspace.cycle_report import update_cycle_report
from mgral_workspace.detector_health import detector_warnings
from tasks.retry import transient_only


@task(name="train-detector", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=5)
def train_detector_task(project_dir: str, params: Params, cycle: int) -> dict:
    logger = get_run_logger()
    trained = steps.train_cycle_detector(project_dir, params, cycle, log=logger.info)
    logger.info(f"cycle {cycle}: detector val mAP50-95 {trained.val_map50_95:.4f} ({trained.weights})")
    return {"weights": str(trained.weights), "val_map50_95": trained.val_map50_95, "val_map50": trained.val_map50}


@task(name="evaluate-detector")
def evaluate_task(project_dir: str, params: Params, weights: str, split: str, cycle: int, labeled: int) -> dict:
    logger = get_run_logger()
    with tqdm(desc=f"evaluate on {split}", unit="img", leave=False) as bar:
        summary = steps.evaluate_split(project_dir, Path(weights), params, split, progress=bar.update)
    steps.save_evaluation(project_dir, cycle, summary, labeled)
    logger.info(f"{split} mAP50-95 {summary.map50_95:.4f}, mAP50 {summary.map50:.4f} on {summary.images} images")
    return asdict(summary)


@task(name="embed-pool", retries=1)
def infer_pool_task(project_dir: str, params: Params, weights: str, cycle: int) -> str:
    with tqdm(desc="detect + embed pool", unit="img", leave=False) as bar:
        path = steps.infer_pool(project_dir, Path(weights), params.detector, cycle, progress=bar.update)
    get_run_logger().info(f"cycle {cycle}: pool detections and embeddings in {path}")
    return str(path)


@task(name="detector-health")
def detector_health_task(project_dir: str, cycle: int, val_map50_95: float, inference_path: str | None) -> list[str]:
    """WARNINGs when the cycle's detector finds nothing (`mgral_workspace.detector_health`), logged and
    written to the cycle report."""
    warnings = detector_warnings(val_map50_95, inference_path)
    logger = get_run_logger()
    for warning in warnings:
        logger.warning(f"cycle {cycle}: {warning}")
    update_cycle_report(project_dir, cycle, warnings=warnings, detector_finds_nothing=bool(warnings))
    return warnings
