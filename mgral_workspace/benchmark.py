"""The benchmark's folder: the shared dataset, each seed's base project, one project per strategy, the result cells.

Layout of `out/`: `dataset/` (built-in data of the profile, `spec.json` beside its files),
`plan.json` (strategies, seeds and cycles of the last run), `runs/seed_<s>/key.json` (what the
seed's results are keyed by: mgral_workspace.benchmark_reuse), `runs/seed_<s>/base` (the seed's
initial project and first-cycle detector, shared by every strategy of that seed), one project per
strategy spec beside it, and at the top the tidy results, AUC table, plots and summary.json.

A strategy's project holds `cells/cycle_NNN.json`, one per finished (strategy, seed, cycle): written
atomically once that cycle's detector is trained and evaluated and, for a selecting cycle, its
batch labeled. The tables are made from the cells alone. `cells/running.json` names the cycle in
progress; `cells/mlflow_run.json` the campaign's MLflow run, reused when the campaign resumes.

With a profile's `finetune_repeats` R > 1, every cycle after a selection also trains R - 1 more
detectors on the same images from the same start with other training seeds (the campaign goes on
from the cycle's own); each one's test result is `cells/cycle_NNN_repeat_R.json`, and that cycle's
row in the tables is the mean over the R trainings. Cycle 1 is one seed's base detector, the same
for every strategy, so it is not repeated (it cancels in every paired difference).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import yaml

from mgral_core.benchmark_analysis import TIDY_COLUMNS, auc_table
from mgral_formats.yolo import load_yolo, read_yolo_label
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.benchmark_reuse import (
    BenchmarkKeyError,
    check_seed_dir,
    claim_seed_dir,
    code_version,
    copy_finished,
)
from mgral_workspace.config import (
    BenchmarkProfile,
    STRATEGY_NAMES,
    ConfigError,
    Params,
    load_params,
    params_from_dict,
    split_strategy_spec,
)
from mgral_workspace.cycle_steps import (
    cycle_dir,
    evaluate_split,
    infer_pool,
    train_cycle_detector,
    train_repeat_detector,
)
from mgral_workspace.plots import plot_histograms, plot_learning_curves
from mgral_workspace.pool import PoolState
from mgral_workspace.reports import benchmark_markdown
from mgral_workspace.project import init_project, load_project_info
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset

CELLS = "cells"


def run_name(spec: str) -> str:
    """The folder name of a strategy spec ('mgral@lookup_table.records=4' -> 'mgral__lookup_table.records-4')."""
    return spec.replace("@", "__").replace("=", "-").replace(",", "_")


def seed_dir(out: Path, seed: int) -> Path:
    return Path(out) / "runs" / f"seed_{seed}"


def run_dir(out: Path, spec: str, seed: int) -> Path:
    return seed_dir(out, seed) / run_name(spec)


def dataset_spec(params: Params, profile: BenchmarkProfile) -> SyntheticSpec:
    d = params.dataset
    return SyntheticSpec(seed=d.seed, image_size=profile.image_size, n_pool=profile.n_pool, n_val=d.n_val,
                         n_test=d.n_test)


def _check_dataset(out: Path, spec: SyntheticSpec) -> bool:
    """Whether out/dataset is finished (its stamp is written last); BenchmarkKeyError if made from another spec."""
    stamp = Path(out) / "dataset" / "spec.json"
    if stamp.exists() and json.loads(stamp.read_text()) != json.loads(json.dumps(asdict(spec))):
        raise BenchmarkKeyError(f"{stamp.parent} was generated from another spec ({stamp}); use another --out or "
                                "delete it")
    return stamp.exists()


def ensure_dataset(out: Path, params: Params, profile: BenchmarkProfile) -> Path:
    """The profile's built-in dataset in out/dataset, generated once (again if it never finished)."""
    dataset, spec = Path(out) / "dataset", dataset_spec(params, profile)
    if not _check_dataset(out, spec):
        shutil.rmtree(dataset, ignore_errors=True)
        generate_dataset(spec, dataset)
        write_json_atomic(dataset / "spec.json", asdict(spec))
    return dataset


def check_benchmark(out: Path, params: Params, profile: BenchmarkProfile, strategies: Sequence[str],
                    seeds: Sequence[int], allow_code_change: bool = False) -> dict[int, str]:
    """Refuse (BenchmarkKeyError, ConfigError) before any work when `out` holds results this run must not reuse
    or a strategy's overrides are invalid; writes nothing. Returns each seed's status (check_seed_dir)."""
    on_dask = params.benchmark.runner == "dask" or params.benchmark.dask_address or os.environ.get(
        "MGRAL_BENCHMARK_DASK_ADDRESS")
    if on_dask and (params.lookup_table.runner == "dask" or params.lookup_table.dask_address
                    or os.environ.get("MGRAL_DASK_ADDRESS")):
        raise ConfigError("benchmark.runner and lookup_table.runner are both Dask: a campaign running on a Dask "
                          "worker would wait on records queued behind it (or start a cluster inside a worker); "
                          "keep lookup_table.runner: threads (and MGRAL_DASK_ADDRESS unset) for a benchmark on Dask")
    code = code_version()
    _check_dataset(out, dataset_spec(params, profile))
    statuses = {}
    for seed in seeds:
        seed_params = profile.apply(params, seed, out)
        for spec in strategies:  # a variant's overrides are checked now, not hours into the run
            variant_params(seed_params, spec)
        statuses[seed] = check_seed_dir(seed_dir(out, seed), seed_params, code, allow_code_change)
    return statuses


def plan_benchmark(out: Path, params: Params, profile: BenchmarkProfile, strategies: Sequence[str],
                   seeds: Sequence[int], allow_code_change: bool = False) -> dict:
    """`check_benchmark`, then record every seed's key, write plan.json and return what is done, interrupted and
    left. Stale `running` markers are cleared: the caller holds the benchmark folder's lock, so no other run is
    writing them."""
    statuses = check_benchmark(out, params, profile, strategies, seeds, allow_code_change)
    code = code_version()
    for seed in seeds:
        claim_seed_dir(seed_dir(out, seed), profile.apply(params, seed, out), code, allow_code_change)
    interrupted = []
    for seed in seeds:
        for spec in strategies:
            marker = run_dir(out, spec, seed) / CELLS / "running.json"
            if marker.exists():
                interrupted.append(f"{spec} seed {seed} {_running_what(json.loads(marker.read_text()))}")
                marker.unlink()
    write_json_atomic(out / "plan.json", {"strategies": list(strategies), "seeds": list(seeds),
                                          "cycles": profile.cycles, "finetune_repeats": profile.finetune_repeats,
                                          "code": code})
    return {"code": code, "seeds": statuses, "interrupted": interrupted, **benchmark_progress(out)}


def variant_params(params: Params, spec: str) -> Params:
    """The parameters of a strategy spec: `params` with the spec's overrides ('mgral@agent.lr=0.01'), validated."""
    name, overrides = split_strategy_spec(spec)
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"strategy {spec!r}: unknown strategy {name!r}; known strategies: "
                          f"{', '.join(STRATEGY_NAMES)} (several specs are separated by commas)")
    data = params.model_dump()
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    return params_from_dict(data, f"strategy {spec!r}")


def prepare_seed_base(out: Path, dataset: Path, params: Params, seed: int, reuse_seed_dir: Path | None,
                      log: Callable[[str], None] = print) -> Path:
    """runs/seed_<seed>/base with its first-cycle detector and pool inference: copied from a profile with the
    same key, resumed, or made. Each piece that exists (project, trained detector, inference) is reused."""
    directory = seed_dir(out, seed)
    base = directory / "base"
    if reuse_seed_dir is not None and not (base / "pool.csv").exists() and copy_finished(
            reuse_seed_dir, directory, "base", params, code_version(), "pool.csv"):
        log(f"benchmark: seed {seed} base copied from {reuse_seed_dir} (same settings and code)")
    if not (base / "pool.csv").exists():
        shutil.rmtree(base, ignore_errors=True)
        loaded, report = load_yolo(dataset)
        init_project(base, loaded, simulate=True, initial_labeled=params.simulation.initial_labeled, seed=seed,
                     metadata=pd.read_csv(dataset / "metadata.csv", dtype={"image_id": str}), report=report)
    (base / "params.yaml").write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    detector = train_cycle_detector(base, params, 1, log=log)  # shared by every strategy of this seed
    infer_pool(base, detector.weights, params.detector, 1)
    return base


def prepare_strategy_run(base: Path, spec: str, params: Params, reuse_seed_dir: Path | None,
                         log: Callable[[str], None] = print) -> Path:
    """The project of one strategy spec of one seed, beside the seed's base. An existing one is kept as it is
    (resumed; its seed's key was checked by plan_benchmark); else a finished run of a profile with the same key
    is copied; else the base is copied afresh (beside the target, then renamed), with the spec's overrides."""
    name = run_name(spec)
    directory = Path(base).parent
    project = directory / name
    if project.exists():
        return project
    final = f"{CELLS}/cycle_{params.campaign.cycles + 1:03d}.json"
    if reuse_seed_dir is not None and copy_finished(reuse_seed_dir, directory, name, params, code_version(), final):
        log(f"benchmark: {spec}, {directory.name} copied from {reuse_seed_dir} (same settings and code)")
        return project
    partial = directory / f".{name}.copying"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(base, partial, symlinks=True)
    variant = variant_params(params, spec)  # a variant: same base, its own parameters
    (partial / "params.yaml").write_text(yaml.safe_dump(variant.model_dump(), sort_keys=False))
    partial.rename(project)
    return project


def cell_path(project: Path, cycle: int) -> Path:
    return Path(project) / CELLS / f"cycle_{cycle:03d}.json"


def save_cell(project: Path, spec: str, seed: int, result: dict, code: str) -> Path:
    """Persist one finished (strategy, seed, cycle) result atomically and clear the running marker."""
    path = cell_path(project, result["cycle"])
    write_json_atomic(path, {"strategy": spec, "seed": seed, "cycle": result["cycle"], "labeled": result["labeled"],
                             "map50_95": result["map50_95"], "map50": result["map50"],
                             "per_class": result.get("per_class", {}), "code": code,
                             "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                             "worker": f"{socket.gethostname()} pid {os.getpid()}"})
    (Path(project) / CELLS / "running.json").unlink(missing_ok=True)
    return path


def repeat_path(project: Path, cycle: int, repeat: int) -> Path:
    return Path(project) / CELLS / f"cycle_{cycle:03d}_repeat_{repeat}.json"


def repeated_cycles(cycles: int, repeats: int) -> list[int]:
    """The cycles whose training is repeated: every one after a selection (2 .. cycles + 1), when repeats > 1."""
    return list(range(2, cycles + 2)) if repeats > 1 else []


def repeats_todo(project: Path, cycles: int, repeats: int) -> list[tuple[int, int]]:
    """(cycle, repeat) trainings still to run, for cycles whose own cell is finished."""
    return [(cycle, r) for cycle in repeated_cycles(cycles, repeats) for r in range(1, repeats)
            if cell_path(project, cycle).exists() and not repeat_path(project, cycle, r).exists()]


def run_finetune_repeat(project: Path, spec: str, seed: int, cycle: int, repeat: int, code: str,
                        log: Callable[[str], None] = print) -> dict:
    """Train repeat `repeat` of `cycle`'s detector (cycle_steps.train_repeat_detector) under the campaign's own
    parameters (its params.yaml: the seed's settings with the spec's overrides, as its cycles read them),
    evaluate it on the test split and persist its result atomically; then drop its weights (the result is
    what the tables use)."""
    project = Path(project)
    path = repeat_path(project, cycle, repeat)
    if path.exists():
        return json.loads(path.read_text())
    params = load_params(project / "params.yaml")
    mark_running(project, cycle, repeat)
    trained = train_repeat_detector(project, params, cycle, repeat, log=log)
    test = evaluate_split(project, trained.weights, params, "test")
    result = {"strategy": spec, "seed": seed, "cycle": cycle, "repeat": repeat,
              "labeled": len(PoolState.load(project).labeled_pool_ids_before(cycle)),
              "map50_95": test.map50_95, "map50": test.map50, "val_map50_95": trained.val_map50_95, "code": code,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "worker": f"{socket.gethostname()} pid {os.getpid()}"}
    write_json_atomic(path, result)
    (project / CELLS / "running.json").unlink(missing_ok=True)
    shutil.rmtree(cycle_dir(project, cycle) / "repeats" / f"repeat_{repeat}", ignore_errors=True)
    return result


def mark_running(project: Path, cycle: int, repeat: int | None = None) -> None:
    """`cells/running.json`: the campaign's cycle (or the cycle's repeated fine-tune) in training, for progress."""
    what = {"cycle": cycle} if repeat is None else {"cycle": cycle, "repeat": repeat}
    write_json_atomic(Path(project) / CELLS / "running.json",
                      {**what, "since": time.time(), "worker": f"{socket.gethostname()} pid {os.getpid()}"})


def _running_what(marker: dict) -> str:
    return f"cycle {marker['cycle']}" + (f" repeat {marker['repeat']}" if "repeat" in marker else "")


def campaign_todo(project: Path, spec: str, seed: int, cycles: int, code: str) -> list[int]:
    """The cycles of this campaign still to run (1 .. cycles select, cycles + 1 only trains and evaluates).

    A cycle the project finished but whose cell is missing (killed between the two) gets its cell from
    the cycle's saved evaluation. Raises ValueError when the project and its cells disagree.
    """
    project = Path(project)
    done_in_pool = PoolState.load(project).current_cycle  # batches selected and labeled
    for cycle in range(1, done_in_pool + 1):
        evaluation = cycle_dir(project, cycle) / "evaluation.json"
        if not cell_path(project, cycle).exists() and evaluation.exists():
            saved = json.loads(evaluation.read_text())
            save_cell(project, spec, seed, {**saved, "cycle": cycle}, code)
    todo = [c for c in range(1, cycles + 2) if not cell_path(project, c).exists()]
    expected = list(range(done_in_pool + 1, cycles + 2))
    if todo and todo != expected:
        raise ValueError(f"{project}: its pool has {done_in_pool} labeled batches but result cells are missing for "
                         f"cycles {todo}; the run is inconsistent: delete {project} to run it again")
    return todo


def campaign_run_id(project: Path) -> str | None:
    path = Path(project) / CELLS / "mlflow_run.json"
    return json.loads(path.read_text())["run_id"] if path.exists() else None


def save_campaign_run_id(project: Path, run_id: str) -> None:
    write_json_atomic(Path(project) / CELLS / "mlflow_run.json", {"run_id": run_id})


def benchmark_progress(out: Path) -> dict:
    """Cells done / running / left of the plan in out/plan.json, read from the folder (any worker's writes);
    with finetune_repeats > 1 also the repeated fine-tunes done of their total."""
    plan = json.loads((Path(out) / "plan.json").read_text())
    total = len(plan["strategies"]) * len(plan["seeds"]) * (plan["cycles"] + 1)
    repeats = plan.get("finetune_repeats", 1)
    repeat_keys = [(c, r) for c in repeated_cycles(plan["cycles"], repeats) for r in range(1, repeats)]
    done, running, running_cells, repeats_done = 0, [], 0, 0
    for seed in plan["seeds"]:
        for spec in plan["strategies"]:
            project = run_dir(out, spec, seed)
            done += sum(cell_path(project, c).exists() for c in range(1, plan["cycles"] + 2))
            repeats_done += sum(repeat_path(project, c, r).exists() for c, r in repeat_keys)
            marker = project / CELLS / "running.json"
            if marker.exists():
                try:
                    what = json.loads(marker.read_text())
                    running.append(f"{spec} seed {seed} {_running_what(what)}")
                except (OSError, ValueError, KeyError):
                    continue  # replaced or removed while it was read
                running_cells += "repeat" not in what
    progress = {"total": total, "done": done, "running": running, "left": total - done - running_cells}
    if repeat_keys:
        progress.update(repeats_done=repeats_done,
                        repeats_total=len(plan["strategies"]) * len(plan["seeds"]) * len(repeat_keys))
    return progress


def progress_line(progress: dict) -> str:
    running = f" ({', '.join(progress['running'])})" if progress["running"] else ""
    repeats = (f"; repeated fine-tunes {progress['repeats_done']}/{progress['repeats_total']}"
               if "repeats_total" in progress else "")
    return (f"benchmark progress: {progress['done']}/{progress['total']} cells done, {len(progress['running'])} "
            f"running{running}, {progress['left']} left{repeats}")


def finetune_results(out: Path, strategies: Sequence[str], seeds: Sequence[int], cycles: int,
                     repeats: int) -> list[dict]:
    """Every fine-tune of the repeated cycles: the cell's own (repeat 0) and its repeats, as rows
    (strategy, seed, cycle, repeat, labeled, map50_95, map50); ValueError naming what is missing."""
    rows, missing = [], []
    for seed in seeds:
        for spec in strategies:
            project = run_dir(out, spec, seed)
            for cycle in repeated_cycles(cycles, repeats):
                for r in range(repeats):
                    path = cell_path(project, cycle) if r == 0 else repeat_path(project, cycle, r)
                    if not path.exists():
                        missing.append(f"{spec} seed {seed} cycle {cycle} repeat {r}")
                        continue
                    cell = json.loads(path.read_text())
                    rows.append({"strategy": spec, "seed": seed, "cycle": cycle, "repeat": r,
                                 "labeled": cell["labeled"], "map50_95": cell["map50_95"], "map50": cell["map50"]})
    if missing:
        raise ValueError(f"{out}: {len(missing)} repeated fine-tunes are not finished: {', '.join(missing[:5])}")
    return rows


def benchmark_rows(out: Path, strategies: Sequence[str], seeds: Sequence[int], cycles: int,
                   repeats: int = 1) -> list[dict]:
    """The tidy rows (TIDY_COLUMNS) of every (strategy, seed, cycle), from the cells; all must be finished.
    With repeats > 1 a repeated cycle's mAP figures are the mean over its R fine-tunes (all must be finished)."""
    rows, missing = [], []
    for seed in seeds:
        for spec in strategies:
            for cycle in range(1, cycles + 2):
                path = cell_path(run_dir(out, spec, seed), cycle)
                if not path.exists():
                    missing.append(f"{spec} seed {seed} cycle {cycle}")
                    continue
                cell = json.loads(path.read_text())
                rows.append({column: cell[column] for column in TIDY_COLUMNS})
    if missing:
        raise ValueError(f"{out}: {len(missing)} benchmark cells are not finished: {', '.join(missing[:5])}")
    if repeats > 1:
        fine_tunes = pd.DataFrame(finetune_results(out, strategies, seeds, cycles, repeats))
        means = fine_tunes.groupby(["strategy", "seed", "cycle"])[["map50_95", "map50"]].mean()
        for row in rows:
            if row["cycle"] in repeated_cycles(cycles, repeats):  # finetune_results has them all, or raised
                key = (row["strategy"], row["seed"], row["cycle"])
                row["map50_95"], row["map50"] = (float(v) for v in means.loc[key, ["map50_95", "map50"]])
    return rows


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
                           seeds: Sequence[int], first_runs: dict[str, Path], cycles: int = 1,
                           repeats: int = 1) -> dict:
    """results.csv/.parquet, learning_curves.png, auc.csv/.md, the first-cycle histograms and summary.json;
    with repeats > 1 also finetunes.csv (every fine-tune of the repeated cycles) and the training noise."""
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    tidy.to_csv(out / "results.csv", index=False)
    tidy.to_parquet(out / "results.parquet", index=False)
    curves = plot_learning_curves(tidy, out / "learning_curves.png", title=f"{profile} profile, {len(seeds)} seeds")
    auc_table(tidy).to_csv(out / "auc.csv", index=False)
    fine_tunes = None
    (out / "finetunes.csv").unlink(missing_ok=True)  # a report of another R must not leave its list behind
    if repeats > 1:
        fine_tunes = pd.DataFrame(finetune_results(out, strategies, seeds, cycles, repeats))
        fine_tunes.to_csv(out / "finetunes.csv", index=False)
    (out / "auc.md").write_text(benchmark_markdown(tidy, fine_tunes=fine_tunes))  # tests, verdicts, headroom, power
    class_png, domain_png = first_cycle_histograms(first_runs, out)
    summary = {"profile": profile, "strategies": list(strategies), "seeds": list(seeds), "finetune_repeats": repeats,
               "results": str(out / "results.csv"), "learning_curves": str(curves), "auc": str(out / "auc.md"),
               "histograms": [str(class_png), str(domain_png)]}
    if fine_tunes is not None:
        summary["finetunes"] = str(out / "finetunes.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
