"""Prefect tasks that log to MLflow: the only way flows reach `tasks.tracking`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import get_run_logger, task

from mgral_workspace import cycle_steps as steps
from mgral_workspace.config import Params
from mgral_workspace.provenance import sha256_of
from tasks import tracking


@task(name="start-run")
def start_run_task(project_dir: str, params: Params, name: str, tags: Mapping[str, str],
                   parent_run_id: str | None = None) -> str:
    """A new MLflow run (child of `parent_run_id` if given) with every parameter logged; its id."""
    run_id = tracking.start_run(project_dir, params, name, tags, parent_run_id)
    tracking.log_params(project_dir, params, run_id, tracking.flat_params(params))
    return run_id


@task(name="end-run")
def end_run_task(project_dir: str, params: Params, run_id: str, status: str = "FINISHED") -> None:
    tracking.end_run(project_dir, params, run_id, status)


@task(name="log-metrics")
def log_metrics_task(project_dir: str, params: Params, run_id: str, metrics: Mapping[str, float],
                     step: int = 0) -> None:
    tracking.log_metrics(project_dir, params, run_id, metrics, step=step)


@task(name="log-artifacts")
def log_artifacts_task(project_dir: str, params: Params, run_id: str, paths: Sequence[str],
                       artifact_path: str | None = None) -> None:
    for path in paths:
        tracking.log_artifact(project_dir, params, run_id, path, artifact_path)


@task(name="log-strategy-outputs")
def log_strategy_outputs_task(project_dir: str, params: Params, run_id: str, outputs: Mapping) -> None:
    """What a strategy left after selecting (`mgral_workspace.selection.select_batch`): metrics, series
    (at most 200 points each, by step) and artifacts under 'mgral'."""
    if not outputs["metrics"] and not outputs["artifacts"]:
        return
    tracking.log_metrics(project_dir, params, run_id, {k: v for k, v in outputs["metrics"].items() if v is not None})
    tracking.log_series(project_dir, params, run_id, outputs["series"], max_points=200)
    for path in outputs["artifacts"]:
        tracking.log_artifact(project_dir, params, run_id, path, "mgral")


@task(name="log-detector-health")
def log_detector_health_task(project_dir: str, params: Params, run_id: str, warnings: Sequence[str]) -> None:
    """Tag `mgral.detector_finds_nothing` (true/false) and metric `detector_finds_nothing` (1/0) on the run;
    the warnings themselves as tag `mgral.warning`."""
    tracking.set_tags(project_dir, params, run_id, {"mgral.detector_finds_nothing": str(bool(warnings)).lower(),
                                                   **({"mgral.warning": " | ".join(warnings)[:5000]} if warnings else {})})
    tracking.log_metrics(project_dir, params, run_id, {"detector_finds_nothing": float(bool(warnings))})


@task(name="set-tags")
def set_tags_task(project_dir: str, params: Params, run_id: str, tags: Mapping[str, str]) -> None:
    tracking.set_tags(project_dir, params, run_id, tags)


@task(name="register-detector")
def register_detector_task(project_dir: str, params: Params, run_id: str, weights: str, test_map50_95: float,
                           cycle: int) -> dict:
    """The cycle's detector as a version of the project's registered model (`tracking.register_detector`):
    name, version, the aliases it took and the champion's version."""
    with tempfile.TemporaryDirectory(prefix="mgral-serving-") as tmp:
        serving = steps.serving_model(project_dir, params, Path(weights), Path(tmp))
        registered = tracking.register_detector(project_dir, params, run_id, serving, test_map50_95, cycle,
                                                sha256_of(weights))
    get_run_logger().info(f"cycle {cycle}: detector registered as {registered['uri']} "
                          f"({', '.join(registered['aliases'])}; champion is version {registered['champion']})")
    return registered

