"""The `mgral-benchmark` flow: strategies x seeds x cycles in simulation, paired per seed.

For each seed every strategy starts from the same project copy: same initial labeled set, same
first-cycle detector (trained once per seed), same settings; only the selections differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml
from prefect import flow, get_run_logger

from flows.campaign import mgral_campaign
from mgral_workspace.benchmark_reuse import copy_finished, write_seed_settings
from mgral_core.benchmark_analysis import TIDY_COLUMNS, auc_table, plot_histograms, plot_learning_curves
from mgral_workspace.config import Params, load_params, split_strategy_spec
from mgral_formats.dataset_io import load_yolo
from mgral_formats.labels import read_yolo_label
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project, load_project_info
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset
from tasks import tracking
from tasks.detector_tasks import infer_pool_task, train_detector_task


def profile_params(params: Params, profile: str, out: Path, seed: int) -> Params:
    """The run parameters of one seed under a benchmark profile."""
    p = getattr(params.benchmark, profile)
    return params.model_copy(update={
        "dataset": params.dataset.model_copy(update={"n_pool": p.n_pool, "image_size": p.image_size}),
        "detector": params.detector.model_copy(update={"imgsz": p.image_size, "epochs": p.epochs,
                                                       "finetune_epochs": p.finetune_epochs}),
        "selection": params.selection.model_copy(update={"budget": p.budget, "seed": seed}),
        "simulation": params.simulation.model_copy(update={"seed": seed}),
        "campaign": params.campaign.model_copy(update={"cycles": p.cycles}),
        "lookup_table": params.lookup_table.model_copy(update={"records": p.lookup_records,
                                                               "diagnostics": p.lookup_diagnostics}),
        "agent": params.agent.model_copy(update={"iterations": p.agent_iterations, "seed": seed}),
        "tracking": params.tracking.model_copy(update={"uri": f"sqlite:///{(out / 'mlflow.db').resolve()}",
                                                       "experiment": "mgral-benchmark", "version_pool": False}),
    })


def _seed_base(out: Path, dataset: Path, params: Params, seed: int, reuse_seed_dir: Path | None) -> Path:
    base = out / "runs" / f"seed_{seed}" / "base"
    if reuse_seed_dir is not None and not (base / "pool.csv").exists() and copy_finished(
            reuse_seed_dir, base.parent, "base", params, "pool.csv"):
        get_run_logger().info(f"benchmark: seed {seed} base copied from {reuse_seed_dir} (identical settings)")
    if not (base / "pool.csv").exists():
        shutil.rmtree(base, ignore_errors=True)
        loaded, report = load_yolo(dataset)
        init_project(base, loaded, simulate=True, initial_labeled=params.simulation.initial_labeled, seed=seed,
                     metadata=pd.read_csv(dataset / "metadata.csv", dtype={"image_id": str}), report=report)
    (base / "params.yaml").write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    detector = train_detector_task(str(base), params, 1)  # shared by every strategy of this seed
    infer_pool_task(str(base), params, detector["weights"], 1)
    return base


def first_cycle_histograms(runs: dict[str, Path], out: Path) -> tuple[Path, Path]:
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
    dataset = out / "dataset"
    if not (dataset / "metadata.csv").exists():
        d = params.dataset
        generate_dataset(SyntheticSpec(seed=d.seed, image_size=chosen.image_size, n_pool=chosen.n_pool,
                                       n_val=d.n_val, n_test=d.n_test), dataset)
    reuse = (out.parent / chosen.reuse).resolve() if chosen.reuse else None
    rows, first_runs = [], {}
    for seed in seeds:
        seed_params = profile_params(params, profile, out, seed)
        seed_dir = out / "runs" / f"seed_{seed}"
        write_seed_settings(seed_dir, seed_params)
        reuse_seed_dir = reuse / "runs" / f"seed_{seed}" if reuse is not None else None
        base = _seed_base(out, dataset, seed_params, seed, reuse_seed_dir)
        for spec in strategies:
            strategy, overrides = split_strategy_spec(spec)
            name = spec.replace("@", "__").replace("=", "-").replace(",", "_")
            project = seed_dir / name
            if (reuse_seed_dir is not None and not (project / "reports" / "metrics.json").exists()
                    and copy_finished(reuse_seed_dir, seed_dir, name, seed_params, "reports/metrics.json")):
                logger.info(f"benchmark: {spec}, seed {seed} copied from {reuse_seed_dir} (identical settings)")
            if not (project / "reports" / "metrics.json").exists():
                shutil.rmtree(project, ignore_errors=True)
                shutil.copytree(base, project, symlinks=True)
                if overrides:  # a variant: same base, its own parameters
                    variant = load_params(project / "params.yaml", overrides)
                    (project / "params.yaml").write_text(yaml.safe_dump(variant.model_dump(), sort_keys=False))
                logger.info(f"benchmark: {spec}, seed {seed}")
                mgral_campaign(str(project), strategy=strategy, label=spec)
            curve = pd.read_csv(project / "reports" / "learning_curve.csv")
            rows += [{"strategy": spec, "seed": seed, **r} for r in
                     curve[["cycle", "labeled", "map50_95", "map50"]].to_dict("records")]
            if seed == seeds[0]:
                first_runs[spec] = project
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    tidy.to_csv(out / "results.csv", index=False)
    tidy.to_parquet(out / "results.parquet", index=False)
    curves = plot_learning_curves(tidy, out / "learning_curves.png", title=f"{profile} profile, {len(seeds)} seeds")
    aucs = auc_table(tidy)
    aucs.to_csv(out / "auc.csv", index=False)
    (out / "auc.md").write_text(aucs.round(4).to_markdown(index=False) + "\n")
    class_png, domain_png = first_cycle_histograms(first_runs, out)
    summary = {"profile": profile, "strategies": strategies, "seeds": seeds, "results": str(out / "results.csv"),
               "learning_curves": str(curves), "auc": str(out / "auc.md"),
               "histograms": [str(class_png), str(domain_png)]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    run_params = profile_params(params, profile, out, seeds[0])
    run_id = tracking.start_run(out, run_params, f"benchmark {profile}", {"kind": "benchmark"})
    for path in (out / "results.csv", curves, out / "auc.md", class_png, domain_png):
        tracking.log_artifact(out, run_params, run_id, path, "benchmark")
    tracking.end_run(out, run_params, run_id)
    logger.info(f"benchmark done: {out / 'auc.md'}")
    return summary
