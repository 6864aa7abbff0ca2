"""The `mgral-benchmark` flow: strategies x seeds x cycles in simulation, paired per seed.

For each seed every strategy starts from the same project copy: same initial labeled set, same
first-cycle detector (trained once per seed), same settings; only the selections differ.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.campaign import mgral_campaign
from mgral_workspace.config import load_params, split_strategy_spec
from tasks.benchmark_tasks import (
    benchmark_dataset_task,
    benchmark_report_task,
    curve_rows_task,
    seed_base_task,
    strategy_run_task,
)
from tasks.detector_tasks import infer_pool_task, train_detector_task
from tasks.tracking_tasks import end_run_task, log_artifacts_task, start_run_task


@flow(name="mgral-benchmark", log_prints=True)
def mgral_benchmark(out_dir: str, profile: str = "quick", params_file: str = "params.yaml",
                    strategies: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """Run the profile's strategies x seeds; write a tidy table, plots and an AUC table to out_dir."""
    logger = get_run_logger()
    params = load_params(params_file)
    chosen = getattr(params.benchmark, profile)
    strategies, seeds = strategies or chosen.strategies, seeds or chosen.seeds
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset = benchmark_dataset_task(str(out), params, chosen)
    reuse = (out.parent / chosen.reuse).resolve() if chosen.reuse else None
    rows, first_runs = [], {}
    for seed in seeds:
        seed_params = chosen.apply(params, seed, out)
        reuse_seed_dir = str(reuse / "runs" / f"seed_{seed}") if reuse is not None else None
        base = seed_base_task(str(out), dataset, seed_params, seed, reuse_seed_dir)
        detector = train_detector_task(base, seed_params, 1)  # shared by every strategy of this seed
        infer_pool_task(base, seed_params, detector["weights"], 1)
        for spec in strategies:
            strategy, overrides = split_strategy_spec(spec)
            project, finished = strategy_run_task(str(Path(base).parent), spec, overrides, seed_params,
                                                  reuse_seed_dir)
            if not finished:
                logger.info(f"benchmark: {spec}, seed {seed}")
                mgral_campaign(project, strategy=strategy, label=spec)
            rows += curve_rows_task(project, spec, seed)
            if seed == seeds[0]:
                first_runs[spec] = project
    summary = benchmark_report_task(str(out), profile, rows, strategies, seeds, first_runs)
    run_params = chosen.apply(params, seeds[0], out)
    run_id = start_run_task(str(out), run_params, f"benchmark {profile}", {"kind": "benchmark"})
    log_artifacts_task(str(out), run_params, run_id, [summary["results"], summary["learning_curves"],
                                                       summary["auc"], *summary["histograms"]], "benchmark")
    end_run_task(str(out), run_params, run_id)
    logger.info(f"benchmark done: {summary['auc']}")
    return summary
