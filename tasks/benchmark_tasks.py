"""Prefect tasks of the benchmark's folder work: plan, dataset, per-seed base, per-strategy run, result cells, report."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mgral_workspace import benchmark as bench
from mgral_workspace.config import BenchmarkProfile, Params
from tasks import tracking
from tasks.retry import transient_only


@task(name="benchmark-plan")
def benchmark_plan_task(out: str, params: Params, profile: BenchmarkProfile, strategies: list[str], seeds: list[int],
                        allow_code_change: bool) -> dict:
    """Check every seed's key (refusing stale results) and say what is reused, restarted and left."""
    plan = bench.plan_benchmark(Path(out), params, profile, strategies, seeds, allow_code_change)
    logger = get_run_logger()
    logger.info(f"benchmark: code version {plan['code']}; seeds: "
                + ", ".join(f"{seed} {status}" for seed, status in plan["seeds"].items()))
    logger.info(f"benchmark: {plan['done']}/{plan['total']} cells already done (reused, not retrained), "
                f"{plan['total'] - plan['done']} to run"
                + (f"; repeated fine-tunes {plan['repeats_done']}/{plan['repeats_total']} done"
                   if "repeats_total" in plan else "")
                + (f"; interrupted cycles restart: {', '.join(plan['interrupted'])}" if plan["interrupted"] else ""))
    return plan


@task(name="benchmark-dataset")
def benchmark_dataset_task(out: str, params: Params, profile: BenchmarkProfile) -> str:
    return str(bench.ensure_dataset(Path(out), params, profile))


@task(name="benchmark-seed-base", retries=1, retry_delay_seconds=5)
def seed_base_task(out: str, dataset: str, params: Params, seed: int, reuse_seed_dir: str | None) -> str:
    """The seed's base project with its first-cycle detector and pool inference (reused where they exist)."""
    return str(bench.prepare_seed_base(Path(out), Path(dataset), params, seed,
                                       Path(reuse_seed_dir) if reuse_seed_dir else None, get_run_logger().info))


@task(name="benchmark-strategy-run")
def strategy_run_task(base: str, spec: str, params: Params, reuse_seed_dir: str | None) -> str:
    return str(bench.prepare_strategy_run(Path(base), spec, params, Path(reuse_seed_dir) if reuse_seed_dir else None,
                                          get_run_logger().info))


@task(name="benchmark-campaign-todo")
def campaign_todo_task(project: str, spec: str, seed: int, cycles: int, code: str) -> list[int]:
    todo = bench.campaign_todo(Path(project), spec, seed, cycles, code)
    done = cycles + 1 - len(todo)
    get_run_logger().info(f"benchmark: {spec}, seed {seed}: " + (
        f"{done} cycles reused, cycles {todo[0]}..{todo[-1]} to run" if todo else "finished, reused"))
    return todo


@task(name="benchmark-campaign-run")
def campaign_run_task(project: str, params: Params, spec: str, strategy: str, seed: int) -> str:
    """The campaign's MLflow parent run: the one a previous sitting started, else a new one."""
    run_id = bench.campaign_run_id(Path(project))
    if run_id is None:
        run_id = tracking.start_run(project, params, f"campaign {spec}", {
            "strategy": strategy, "variant": spec, "kind": "campaign", "seed": str(seed)})
        bench.save_campaign_run_id(Path(project), run_id)
    return run_id


@task(name="benchmark-cycle-start")
def cycle_start_task(project: str, cycle: int) -> None:
    bench.mark_running(Path(project), cycle)


@task(name="benchmark-cell")
def save_cell_task(out: str, project: str, spec: str, seed: int, cycle: int, result: dict, code: str) -> None:
    """Persist one (strategy, seed, cycle) result as soon as it is done, then log the benchmark's progress."""
    if result["cycle"] != cycle:
        raise ValueError(f"{project}: expected to finish cycle {cycle}, the cycle flow ran cycle {result['cycle']}")
    bench.save_cell(Path(project), spec, seed, result, code)
    get_run_logger().info(f"benchmark: {spec}, seed {seed}, cycle {cycle} done (test mAP50-95 "
                          f"{result['map50_95']:.4f}); " + bench.progress_line(bench.benchmark_progress(Path(out))))


@task(name="benchmark-repeats-todo", cache_policy=NO_CACHE)  # asked again after every cell: never a cached answer
def repeats_todo_task(project: str, cycles: int, repeats: int) -> list[tuple[int, int]]:
    return bench.repeats_todo(Path(project), cycles, repeats)


@task(name="benchmark-finetune-repeat", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=5)
def finetune_repeat_task(out: str, project: str, spec: str, seed: int, cycle: int, repeat: int, code: str) -> dict:
    """One more fine-tune of a finished cell with another training seed, its test result persisted at once."""
    logger = get_run_logger()
    result = bench.run_finetune_repeat(Path(project), spec, seed, cycle, repeat, code, logger.info)
    logger.info(f"benchmark: {spec}, seed {seed}, cycle {cycle}, repeat {repeat} done (test mAP50-95 "
                f"{result['map50_95']:.4f}); " + bench.progress_line(bench.benchmark_progress(Path(out))))
    return result


@task(name="benchmark-rows")
def benchmark_rows_task(out: str, strategies: list[str], seeds: list[int], cycles: int,
                        repeats: int = 1) -> list[dict]:
    return bench.benchmark_rows(Path(out), strategies, seeds, cycles, repeats)


@task(name="benchmark-report")
def benchmark_report_task(out: str, profile: str, rows: list[dict], strategies: list[str], seeds: list[int],
                          cycles: int = 1, repeats: int = 1) -> dict:
    return bench.write_benchmark_report(Path(out), profile, rows, strategies, seeds,
                                        {spec: bench.run_dir(Path(out), spec, seeds[0]) for spec in strategies},
                                        cycles, repeats)
