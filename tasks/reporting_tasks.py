"""Prefect tasks that log a cycle's results to MLflow and write plots and metrics files."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mgral_workspace import cycle_steps as steps
from mgral_workspace.config import Params
from mgral_workspace.plots import plot_class_histogram, plot_learning_curve
from mgral_workspace.pool import PoolState
from mgral_workspace.reports import write_campaign_reports
from tasks import tracking


@task(name="log-cycle")
def log_cycle_task(project_dir: str, params: Params, run_id: str, cycle: int, labeled: int,
                   evaluation: dict, detector: dict, selected: list[str], strategy: str) -> None:
    metrics = {"test_map50_95": evaluation["map50_95"], "test_map50": evaluation["map50"],
               "val_map50_95": detector["val_map50_95"], "val_map50": detector["val_map50"],
               "labeled": labeled, "selected": len(selected)}
    metrics.update({f"test_ap50_95_{name}": ap for name, ap in evaluation["per_class"].items()})
    tracking.log_metrics(project_dir, params, run_id, metrics, step=labeled)
    tracking.log_artifact(project_dir, params, run_id, detector["weights"], "detector")
    if selected:
        tracking.log_json(project_dir, params, run_id, {"cycle": cycle, "strategy": strategy, "ids": selected},
                          "selected_ids.json")
        histogram = steps.class_histogram(project_dir, selected) if _labeled(project_dir, selected) else {}
        if histogram:
            png = plot_class_histogram(histogram, steps.cycle_dir(project_dir, cycle) / "selected_classes.png",
                                       title=f"cycle {cycle}: classes in the {strategy} batch")
            tracking.log_artifact(project_dir, params, run_id, png, "plots")
            grid = steps.selected_grid(project_dir, cycle, selected)
            tracking.log_artifact(project_dir, params, run_id, grid, "plots")
            tracking.log_metrics(project_dir, params, run_id,
                                 {f"selected_instances_{k}": v for k, v in histogram.items()}, step=labeled)


def _labeled(project_dir: str, ids: list[str]) -> bool:
    labeled = set(PoolState.load(project_dir).labeled_pool_ids)
    return all(i in labeled for i in ids)


@task(name="learning-curve")
def learning_curve_task(project_dir: str, params: Params, run_id: str, points: list[dict], title: str,
                        out_png: str) -> str:
    png = plot_learning_curve(points, out_png, title=title)
    tracking.log_artifact(project_dir, params, run_id, png, "plots")
    return str(png)


@task(name="write-reports")
def write_reports_task(reports_dir: str, points: list[dict], metrics: dict) -> None:
    """metrics.json and learning_curve.csv of a campaign, written atomically."""
    write_campaign_reports(Path(reports_dir), points, metrics)
