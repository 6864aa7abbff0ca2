"""Prefect tasks of the benchmark's folder work: dataset, per-seed base, per-strategy run, report."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mgral_workspace import benchmark as bench
from mgral_workspace.config import BenchmarkProfile, Params


@task(name="benchmark-dataset")
def benchmark_dataset_task(out: str, params: Params, profile: BenchmarkProfile) -> str:
    return str(bench.ensure_dataset(Path(out), params, profile))


@task(name="benchmark-seed-base")
def seed_base_task(out: str, dataset: str, params: Params, seed: int, reuse_seed_dir: str | None) -> str:
    return str(bench.prepare_seed_base(Path(out), Path(dataset), params, seed,
                                       Path(reuse_seed_dir) if reuse_seed_dir else None, get_run_logger().info))


@task(name="benchmark-strategy-run")
def strategy_run_task(seed_dir: str, spec: str, overrides: dict, params: Params,
                      reuse_seed_dir: str | None) -> tuple[str, bool]:
    project, finished = bench.prepare_strategy_run(Path(seed_dir), spec, overrides, params,
                                                   Path(reuse_seed_dir) if reuse_seed_dir else None,
                                                   get_run_logger().info)
    return str(project), finished


@task(name="benchmark-curve")
def curve_rows_task(project: str, spec: str, seed: int) -> list[dict]:
    return bench.curve_rows(Path(project), spec, seed)


@task(name="benchmark-report")
def benchmark_report_task(out: str, profile: str, rows: list[dict], strategies: list[str], seeds: list[int],
                          first_runs: dict[str, str]) -> dict:
    return bench.write_benchmark_report(Path(out), profile, rows, strategies, seeds,
                                        {k: Path(v) for k, v in first_runs.items()})
