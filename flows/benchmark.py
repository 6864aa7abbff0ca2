"""The `mgral-benchmark` flow: strategies x seeds x cycles in simulation, paired per seed, resumable, on threads or Dask.

For each seed every strategy starts from the same project copy: same initial labeled set, same
first-cycle detector (trained once per seed), same settings; only the selections differ. Each
(strategy, seed, cycle) result is persisted as soon as it is done; running the same command again
reuses every finished cell and restarts an interrupted cycle only (the rule for what may be reused:
mgral_workspace.benchmark_reuse). With a profile's `finetune_repeats` R > 1 each cell after a selection
is the mean of R fine-tunes with other training seeds (mgral_workspace.benchmark). The (strategy, seed)
campaigns are mapped tasks of the `mgral-benchmark-campaigns` subflow, on local threads or a Dask cluster (`benchmark.runner`).
"""

# No `from __future__ import annotations` here: a flow run on a Dask worker validates its parameters against
# these annotations, and the function may arrive there pickled by value, without this module's names.
import os
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.cycle import mgral_cycle
from mgral_workspace.config import BenchmarkParams, Params, load_params, split_strategy_spec
from mgral_workspace.project_lock import project_lock
from tasks.benchmark_tasks import (
    benchmark_dataset_task,
    benchmark_plan_task,
    benchmark_report_task,
    benchmark_rows_task,
    campaign_run_task,
    campaign_todo_task,
    cycle_start_task,
    finetune_repeat_task,
    repeats_todo_task,
    save_cell_task,
    seed_base_task,
    strategy_run_task,
)
from tasks.interrupts import children_stop_when_interrupted
from tasks.tracking_tasks import end_run_task, log_artifacts_task, start_run_task


def temporary_server_env() -> dict[str, str]:
    """{'PREFECT_API_URL': ...} of the temporary Prefect server this process runs, for the workers of a local Dask
    cluster; {} when an API is configured (the workers inherit it) or no temporary server runs.

    Without it every worker process started a temporary server of its own: the campaigns' flow and task runs
    went to servers nobody could see, and a worker ended by its nanny left its server running as an orphan.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return {}
    server = SubprocessASGIServer()  # the process's one temporary server (a singleton), started or not
    return {"PREFECT_API_URL": server.api_url} if getattr(server, "running", False) else {}


def benchmark_task_runner(settings: BenchmarkParams):
    """Local threads, or Dask: MGRAL_BENCHMARK_DASK_ADDRESS / benchmark.dask_address, else a local cluster of
    benchmark.dask_workers single-threaded worker processes on 127.0.0.1 (no dashboard)."""
    address = os.environ.get("MGRAL_BENCHMARK_DASK_ADDRESS") or settings.dask_address
    if settings.runner == "dask" or address:
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "host": "127.0.0.1", "dashboard_address": None,
                                              "env": temporary_server_env()})
    return ThreadPoolTaskRunner(max_workers=settings.max_workers)


@flow(name="mgral-benchmark", log_prints=True)
def mgral_benchmark(out_dir: str, profile: str = "quick", params_file: str = "params.yaml",
                    strategies: list[str] | None = None, seeds: list[int] | None = None,
                    allow_code_change: bool = False) -> dict:
    """Run (or resume) the profile's strategies x seeds; write a tidy table, plots and an AUC table to out_dir.

    Refuses, before any work, a folder whose results were made with other settings (or other code,
    unless `allow_code_change`); one benchmark at a time may write a folder.
    """
    logger = get_run_logger()
    params = load_params(params_file)
    chosen = getattr(params.benchmark, profile)
    strategies, seeds = strategies or chosen.strategies, seeds or chosen.seeds
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with project_lock(out, f"mgral benchmark --profile {profile}"):
        plan = benchmark_plan_task(str(out), params, chosen, strategies, seeds, allow_code_change)
        dataset = benchmark_dataset_task(str(out), params, chosen)
        run_params = chosen.apply(params, seeds[0], out)
        run_id = start_run_task(str(out), run_params, f"benchmark {profile}", {"kind": "benchmark"})  # makes the store
        try:
            run_campaigns.with_options(task_runner=benchmark_task_runner(params.benchmark))(
                str(out), dataset, params, profile, strategies, seeds, plan["code"])
            rows = benchmark_rows_task(str(out), strategies, seeds, chosen.cycles, chosen.finetune_repeats)
            summary = benchmark_report_task(str(out), profile, rows, strategies, seeds, chosen.cycles,
                                            chosen.finetune_repeats)
            log_artifacts_task(str(out), run_params, run_id, [summary["results"], summary["learning_curves"],
                                                               summary["auc"], *summary["histograms"],
                                                               *([summary["finetunes"]] if "finetunes" in summary
                                                                 else [])], "benchmark")
        except BaseException:
            end_run_task(str(out), run_params, run_id, "FAILED")
            raise
        end_run_task(str(out), run_params, run_id)
    logger.info(f"benchmark done: {summary['auc']}")
    return summary


@flow(name="mgral-benchmark-campaigns")
def run_campaigns(out: str, dataset: str, params: Params, profile: str, strategies: list[str], seeds: list[int],
                  code: str) -> list[str]:
    """Each seed's base (mapped over seeds), then every (strategy, seed) campaign (mapped), each starting as soon
    as its seed's base is ready. Returns the campaigns' project folders."""
    chosen = getattr(params.benchmark, profile)
    reuse = (Path(out).parent / chosen.reuse).resolve() if chosen.reuse else None
    seed_params = {seed: chosen.apply(params, seed, Path(out)) for seed in seeds}
    reuse_dirs = {seed: str(reuse / "runs" / f"seed_{seed}") if reuse is not None else None for seed in seeds}
    bases = dict(zip(seeds, seed_base_task.map(unmapped(out), unmapped(dataset), [seed_params[s] for s in seeds],
                                               seeds, [reuse_dirs[s] for s in seeds])))
    cells = [(spec, seed) for seed in seeds for spec in strategies]
    campaigns = campaign_task.map(unmapped(out), [bases[seed] for _, seed in cells], [spec for spec, _ in cells],
                                  [seed for _, seed in cells], [seed_params[seed] for _, seed in cells],
                                  [reuse_dirs[seed] for _, seed in cells], unmapped(code),
                                  unmapped(chosen.finetune_repeats))
    with children_stop_when_interrupted():  # SIGTERM on local threads: stop the trainings, do not wait
        return [future.result() for future in campaigns]


@task(name="benchmark-campaign")
def campaign_task(out: str, base: str, spec: str, seed: int, params: Params, reuse_seed_dir: str | None,
                  code: str, repeats: int = 1) -> str:
    """One (strategy, seed) campaign on the benchmark's task runner (a thread or a Dask worker)."""
    return benchmark_campaign(out, base, spec, seed, params, reuse_seed_dir, code, repeats)


@flow(name="mgral-benchmark-campaign")
def benchmark_campaign(out: str, base: str, spec: str, seed: int, params: Params, reuse_seed_dir: str | None,
                       code: str, repeats: int = 1) -> str:
    """The campaign's remaining cycles, one cycle flow each; every finished cycle becomes a result cell at once,
    followed by its repeated fine-tunes (`repeats` > 1; a finished cell's missing repeats run first)."""
    strategy, _ = split_strategy_spec(spec)
    project = strategy_run_task(base, spec, params, reuse_seed_dir)
    cycles = params.campaign.cycles
    with project_lock(project, f"mgral benchmark {spec}"):
        todo = campaign_todo_task(project, spec, seed, cycles, code)
        pending = repeats_todo_task(project, cycles, repeats)
        if not todo and not pending:
            return project
        parent = campaign_run_task(project, params, spec, strategy, seed)
        try:
            for cycle, repeat in pending:
                finetune_repeat_task(out, project, spec, seed, cycle, repeat, code)
            for cycle in todo:
                cycle_start_task(project, cycle)
                result = mgral_cycle(project, strategy, parent_run_id=parent, select=cycle <= cycles)
                save_cell_task(out, project, spec, seed, cycle, result, code)
                for done, repeat in repeats_todo_task(project, cycles, repeats):  # this cycle's repeats
                    finetune_repeat_task(out, project, spec, seed, done, repeat, code)
        except BaseException:
            end_run_task(project, params, parent, "FAILED")  # a later sitting reuses this run and finishes it
            raise
        end_run_task(project, params, parent)
    return project
