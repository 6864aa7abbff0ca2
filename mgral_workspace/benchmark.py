"""The benchmark's folder: the shared dataset, each seed's base project, one project per strategy, the tables.

Layout of `out/`: `dataset/` (built-in data of the profile), `runs/seed_<s>/base` (the seed's
initial project and first-cycle detector, shared by every strategy of that seed), one project per
strategy spec beside it, and at the top the tidy results, AUC table, plots and summary.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import yaml

from mgral_core.benchmark_analysis import TIDY_COLUMNS, auc_table
from mgral_formats.yolo import load_yolo, read_yolo_label
from mgral_workspace.benchmark_reuse import copy_finished, write_seed_settings
from mgral_workspace.config import BenchmarkProfile, Params, load_params
from mgral_workspace.plots import plot_histograms, plot_learning_curves
from mgral_workspace.pool import PoolState
from mgral_workspace.reports import benchmark_markdown
from mgral_workspace.project import init_project, load_project_info
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset


def run_name(spec: str) -> str:
    """The folder name of a strategy spec ('mgral@lookup_table.records=4' -> 'mgral__lookup_table.records-4')."""
    return spec.replace("@", "__").replace("=", "-").replace(",", "_")


def ensure_dataset(out: Path, params: Params, profile: BenchmarkProfile) -> Path:
    """The profile's built-in dataset in out/dataset, generated once."""
    dataset = out / "dataset"
    if not (dataset / "metadata.csv").exists():
        d = params.dataset
        generate_dataset(SyntheticSpec(seed=d.seed, image_size=profile.image_size, n_pool=profile.n_pool,
                                       n_val=d.n_val, n_test=d.n_test), dataset)
    return dataset


def prepare_seed_base(out: Path, dataset: Path, params: Params, seed: int, reuse_seed_dir: Path | None,
                      log: Callable[[str], None] = print) -> Path:
    """runs/seed_<seed>/base: the seed's project (copied from a profile with identical settings, or made)."""
    seed_dir = out / "runs" / f"seed_{seed}"
    write_seed_settings(seed_dir, params)
    base = seed_dir / "base"
    if reuse_seed_dir is not None and not (base / "pool.csv").exists() and copy_finished(
            reuse_seed_dir, seed_dir, "base", params, "pool.csv"):
        log(f"benchmark: seed {seed} base copied from {reuse_seed_dir} (identical settings)")
    if not (base / "pool.csv").exists():
        shutil.rmtree(base, ignore_errors=True)
        loaded, report = load_yolo(dataset)
        init_project(base, loaded, simulate=True, initial_labeled=params.simulation.initial_labeled, seed=seed,
                     metadata=pd.read_csv(dataset / "metadata.csv", dtype={"image_id": str}), report=report)
    (base / "params.yaml").write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    return base


def prepare_strategy_run(seed_dir: Path, spec: str, overrides: dict, params: Params, reuse_seed_dir: Path | None,
                         log: Callable[[str], None] = print) -> tuple[Path, bool]:
    """(project, finished) of one strategy spec of one seed: a finished run is kept (or copied from a
    profile with identical settings); otherwise the seed's base is copied afresh, with the spec's overrides."""
    name = run_name(spec)
    project = seed_dir / name
    done = project / "reports" / "metrics.json"
    if reuse_seed_dir is not None and not done.exists() and copy_finished(
            reuse_seed_dir, seed_dir, name, params, "reports/metrics.json"):
        log(f"benchmark: {spec}, {seed_dir.name} copied from {reuse_seed_dir} (identical settings)")
    if done.exists():
        return project, True
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(seed_dir / "base", project, symlinks=True)
    if overrides:  # a variant: same base, its own parameters
        variant = load_params(project / "params.yaml", overrides)
        (project / "params.yaml").write_text(yaml.safe_dump(variant.model_dump(), sort_keys=False))
    return project, False


def curve_rows(project: Path, spec: str, seed: int) -> list[dict]:
    """The finished run's learning curve as tidy rows (TIDY_COLUMNS)."""
    curve = pd.read_csv(project / "reports" / "learning_curve.csv")
    return [{"strategy": spec, "seed": seed, **r} for r in
            curve[["cycle", "labeled", "map50_95", "map50"]].to_dict("records")]


def first_cycle_histograms(runs: dict[str, Path], out: Path) -> tuple[Path, Path]:
    """Instances per class and images per domain in each strategy's first-cycle batch, as two bar charts."""
    classes, domains = {}, {}
    for strategy, project in runs.items():
        ids = json.loads((project / "cycles" / "cycle_001" / "selection.json").read_text())["ids"]
        info, pool = load_project_info(project), PoolState.load(project)
        table = pool.table.set_index("image_id")
        counts = pd.Series(0, index=list(info.class_names))
        for image_id in ids:
            _, cls = read_yolo_label(project / table.loc[image_id, "label_file"], 1, 1)
            for c in cls:
                counts.iloc[int(c)] += 1
        classes[strategy] = counts
        meta = project / "metadata.csv"
        if meta.exists():
            frame = pd.read_csv(meta, dtype={"image_id": str}).set_index("image_id")
            domains[strategy] = frame.loc[ids, "domain"].value_counts()
    class_png = plot_histograms(pd.DataFrame(classes).T, out / "first_cycle_classes.png",
                                "first-cycle selections: instances per class")
    domain_png = plot_histograms(pd.DataFrame(domains).T.fillna(0), out / "first_cycle_domains.png",
                                 "first-cycle selections: images per domain")
    return class_png, domain_png


def write_benchmark_report(out: Path, profile: str, rows: list[dict], strategies: Sequence[str],
                           seeds: Sequence[int], first_runs: dict[str, Path]) -> dict:
    """results.csv/.parquet, learning_curves.png, auc.csv/.md, the first-cycle histograms and summary.json."""
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    tidy.to_csv(out / "results.csv", index=False)
    tidy.to_parquet(out / "results.parquet", index=False)
    curves = plot_learning_curves(tidy, out / "learning_curves.png", title=f"{profile} profile, {len(seeds)} seeds")
    auc_table(tidy).to_csv(out / "auc.csv", index=False)
    (out / "auc.md").write_text(benchmark_markdown(tidy))  # AUC tests, verdicts, ceiling headroom, power
    class_png, domain_png = first_cycle_histograms(first_runs, out)
    summary = {"profile": profile, "strategies": list(strategies), "seeds": list(seeds),
               "results": str(out / "results.csv"), "learning_curves": str(curves), "auc": str(out / "auc.md"),
               "histograms": [str(class_png), str(domain_png)]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
