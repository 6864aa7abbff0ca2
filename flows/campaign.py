"""The `mgral-campaign` flow: N simulated cycles in a row, then a final train-and-evaluate."""

from __future__ import annotations

import csv
from pathlib import Path

from prefect import flow, get_run_logger

from flows.cycle import mgral_cycle
from flows.params import resolve_params
from mgral_core.atomic import atomic_open, write_json_atomic
from mgral_core.project import load_project_info
from mgral_core.project_lock import project_lock
from tasks import tracking
from tasks.reporting_tasks import learning_curve_task


@flow(name="mgral-campaign", log_prints=True)
def mgral_campaign(project_dir: str, cycles: int | None = None, strategy: str | None = None,
                   budget: int | None = None, params_file: str | None = None,
                   reports_dir: str | None = None, label: str | None = None) -> dict:
    """Run `cycles` selection cycles in simulation and evaluate the final labeled set.

    Writes <reports_dir>/metrics.json (final figures, for `dvc metrics`), learning_curve.csv
    (for `dvc plots`) and learning_curve.png; logs a parent MLflow run with one child per cycle.
    `label` names the run and is tagged as its `variant` (the benchmark passes specs such as
    'mgral@lookup_table.records=4'); by default the strategy.
    """
    with project_lock(project_dir, "mgral campaign"):
        return _run_campaign(project_dir, cycles, strategy, budget, params_file, reports_dir, label)


def _run_campaign(project_dir: str, cycles: int | None, strategy: str | None, budget: int | None,
                  params_file: str | None, reports_dir: str | None, label: str | None) -> dict:
    logger = get_run_logger()
    if not load_project_info(project_dir).simulate:
        raise ValueError(f"{project_dir}: a campaign runs simulated cycles (an oracle labels each batch), but this "
                         "project is labeled by people; run `mgral cycle` once per batch instead (docs: README, "
                         "Real labeling)")
    params = resolve_params(project_dir, params_file, strategy=strategy, budget=budget, cycles=cycles)
    strategy, budget, cycles = params.selection.strategy, params.selection.budget, params.campaign.cycles
    reports = Path(reports_dir) if reports_dir else Path(project_dir) / "reports"
    label = label or strategy
    parent = tracking.start_run(project_dir, params, f"campaign {label}",
                                {"strategy": strategy, "variant": label, "kind": "campaign",
                                 "seed": str(params.selection.seed)})
    try:
        tracking.log_params(project_dir, params, parent, tracking.flat_params(params))
        points = []
        for index in range(cycles + 1):
            last = index == cycles
            result = mgral_cycle(project_dir, strategy, budget, params_file, parent_run_id=parent, select=not last)
            points.append({"strategy": strategy, "cycle": result["cycle"], "labeled": result["labeled"],
                           "map50_95": result["map50_95"], "map50": result["map50"]})
            tracking.log_metrics(project_dir, params, parent, {"test_map50_95": result["map50_95"],
                                                               "test_map50": result["map50"]}, step=result["labeled"])
        png = learning_curve_task(project_dir, params, parent, points, f"{strategy}, {budget} per cycle",
                                  str(reports / "learning_curve.png"))
        metrics = {"strategy": strategy, "final_labeled": points[-1]["labeled"],
                   "final_map50_95": points[-1]["map50_95"], "final_map50": points[-1]["map50"],
                   "mlflow_parent_run": parent}
        _write_reports(reports, points, metrics)
    except BaseException:
        tracking.end_run(project_dir, params, parent, "FAILED")
        raise
    tracking.end_run(project_dir, params, parent)
    logger.info(f"campaign done: final test mAP50-95 {metrics['final_map50_95']:.4f} with "
                f"{metrics['final_labeled']} labeled images")
    return {**metrics, "points": points, "learning_curve_png": png, "reports_dir": str(reports.resolve())}


def _write_reports(reports: Path, points: list[dict], metrics: dict) -> None:
    reports.mkdir(parents=True, exist_ok=True)
    write_json_atomic(reports / "metrics.json", metrics)
    with atomic_open(reports / "learning_curve.csv", "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=["strategy", "cycle", "labeled", "map50_95", "map50"])
        writer.writeheader()
        writer.writerows(points)
