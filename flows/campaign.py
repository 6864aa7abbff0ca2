"""The `mgral-campaign` flow: N simulated cycles in a row, then a final train-and-evaluate."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.cycle import mgral_cycle
from flows.params import resolve_params
from mgral_workspace.project import load_project_info
from mgral_workspace.project_lock import project_lock
from tasks.tracking_tasks import end_run_task, log_metrics_task, start_run_task
from tasks.reporting_tasks import learning_curve_task, write_reports_task


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
    parent = start_run_task(project_dir, params, f"campaign {label}",
                            {"strategy": strategy, "variant": label, "kind": "campaign",
                             "seed": str(params.selection.seed)})
    try:
        points = []
        for index in range(cycles + 1):
            last = index == cycles
            result = mgral_cycle(project_dir, strategy, budget, params_file, parent_run_id=parent, select=not last,
                                 register_detector=False)  # learning-curve points of a simulation, not detectors to serve
            points.append({"strategy": strategy, "cycle": result["cycle"], "labeled": result["labeled"],
                           "map50_95": result["map50_95"], "map50": result["map50"]})
            log_metrics_task(project_dir, params, parent, {"test_map50_95": result["map50_95"],
                                                           "test_map50": result["map50"]}, step=result["labeled"])
        png = learning_curve_task(project_dir, params, parent, points, f"{strategy}, {budget} per cycle",
                                  str(reports / "learning_curve.png"))
        metrics = {"strategy": strategy, "final_labeled": points[-1]["labeled"],
                   "final_map50_95": points[-1]["map50_95"], "final_map50": points[-1]["map50"],
                   "mlflow_parent_run": parent}
        write_reports_task(str(reports), points, metrics)
    except BaseException:
        end_run_task(project_dir, params, parent, "FAILED")
        raise
    end_run_task(project_dir, params, parent)
    logger.info(f"campaign done: final test mAP50-95 {metrics['final_map50_95']:.4f} with "
                f"{metrics['final_labeled']} labeled images")
    return {**metrics, "points": points, "learning_curve_png": png, "reports_dir": str(reports.resolve())}

