"""The reward's measurement chain (links a-e) on one cycle, for lookup tables built from random or designed batches.

On a built-in simulation project (default: 1,000-image pool at 128 px, 100 labeled, budget 100, the
pretrained start) it trains the cycle-1 detector once, then for each table kind builds the table exactly
as the cycle flow does (`record_values.record_plan`, `lookup_record`, `record_check`), lets MGRAL select
(`selection.select_batch`) and measures the chain (`mgral_workspace.reward_chain`). Each figure is printed
against its target:
  (a) record repeatability >= 0.5, (b) fidelity on diverse batches >= 0.6, (c) leave-one-out Spearman >= 0.5,
  (d) the agent's final estimate against the best record and the random reference,
  (e) the true-label value of MGRAL's batch >= that of the best table record (and against each baseline and
      the ceiling, the best of the diverse batches).
The diverse set (the oracle ceiling's candidates: every baseline's batch, mixtures, random batches) is the
same for every table kind, and scored once. Results: bench/results/reward_chain.json (per table kind).

A variant is a table kind with levers joined by '+', each a change from the paper's MGRAL (whatever params.yaml
sets; its default MGRAL is `random+class_gain+exact+normalized+best_sampled`): `designed+sampled` (sampled pseudo-labels),
`+expected` / `+class_gain` (records valued from the detector's detections, `lookup_table.value`),
`+gp` (the GP value model), `+task_aware` (task-aware batch representation), `+normalized` / `+rank`
(the agent's advantage), `+imitate` (imitation start, 20 steps), `+best_estimate` (the final batch: the estimator's
best of the agent's top-k and the records), `+exact` (the reward is the detection value itself, computed for every
batch drawn; with `+expected` or `+class_gain`), `+best_sampled` (the final batch: the top-k or the best batch drawn,
whichever rates higher). Variants with the same table kind and
pseudo-labels share their records (trained once): only the selection and the chain run again. Each
variant's result is written as soon as it is done, and a run started again reuses everything finished.

Usage: python bench/reward_chain.py [--tables random,designed,designed+gp] [--records 24] [--diverse 24]
           [--epochs 60] [--n-pool 1000] [--image-size 128] [--initial 100] [--budget 100] [--work /tmp/mgral_chain]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from mgral_core.lookup_table import table_diagnostics
from mgral_core.reward_chain import chain_rows
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import MGRAL_PAPER, load_params, split_strategy_spec
from mgral_workspace.cycle_steps import infer_pool, train_cycle_detector
from mgral_workspace.project import init_from_synthetic
from mgral_workspace.provenance import cpu_model
from mgral_workspace.record_values import cache_cycle_features, lookup_record, record_check, record_plan
from mgral_workspace.reward_chain import chain_dir, reward_chain
from mgral_workspace.selection import lookup_dir, select_batch
from mgral_workspace.synthetic import SyntheticSpec


def build_table(project: Path, params, weights: str, inference: str, budget: int, workers: int) -> dict:
    """The cycle-1 table with its diagnostics, as `flows.lookup_table.build_lookup_table` builds it."""
    table = lookup_dir(project, 1)
    plan = record_plan(str(project), params, 1, budget, inference)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        records = list(pool.map(lambda i: lookup_record(project, params, table, i, plan[i]["ids"], weights, inference,
                                                        plan[i]), range(len(plan))))
        checks = list(pool.map(lambda i: record_check(project, params, table, i, plan[i]["ids"], weights, inference),
                               range(len(plan))))
    summary = table_diagnostics(records, checks)
    write_json_atomic(table / "diagnostics.json", summary)
    return summary


LEVERS = {"sampled": ("lookup_table", {"pseudo_labels": "sampled"}),
          "expected": ("lookup_table", {"value": "expected_objects"}),
          "class_gain": ("lookup_table", {"value": "class_gain"}),
          "gp": ("reward", {"estimator": "gp"}),
          "task_aware": ("reward", {"representation": "task_aware"}),
          "normalized": ("agent", {"advantage": "normalized"}),
          "rank": ("agent", {"advantage": "rank"}),
          "imitate": ("agent", {"imitation_steps": 20}),
          "best_estimate": ("agent", {"final_choice": "best_estimate"}),
          "exact": ("reward", {"estimator": "exact"}),
          "best_sampled": ("agent", {"final_choice": "best_sampled"})}


def variant_params(params, variant: str):
    """`params` with the paper's MGRAL (`MGRAL_PAPER`: proxy records, the k-NN reward, R - mAP_ref, the top-k),
    the variant's table kind (`lookup_table.batch_sampling`) and its levers applied: a variant's name lists
    everything it changes from the paper, whatever params.yaml's MGRAL is."""
    kind, *levers = variant.split("+")
    updates: dict[str, dict] = {}
    for dotted, value in split_strategy_spec(MGRAL_PAPER)[1].items():
        section, _, key = dotted.partition(".")
        updates.setdefault(section, {})[key] = value
    updates["lookup_table"]["batch_sampling"] = kind
    for lever in levers:
        if lever not in LEVERS:
            raise SystemExit(f"--tables: unknown lever {lever!r} in {variant!r}; known: {', '.join(LEVERS)}")
        section, values = LEVERS[lever]
        updates.setdefault(section, {}).update(values)
    return params.model_copy(update={name: getattr(params, name).model_copy(update=values)
                                     for name, values in updates.items()})


def table_key(params) -> tuple:
    """What a record's value depends on, beyond the cycle: variants with the same key share records."""
    t = params.lookup_table
    if t.value != "proxy":
        return t.batch_sampling, t.value, t.expected_floor
    return t.batch_sampling, t.pseudo_labels, t.pseudo_draws if t.pseudo_labels == "sampled" else None


def share_records(source: Path, target: Path) -> None:
    """Copy the finished records of table `source` (and their diagnostics) into table `target`."""
    (target / "diagnostics").mkdir(parents=True, exist_ok=True)
    for path in source.glob("record_*"):
        shutil.copy2(path, target / path.name)
    for path in (source / "diagnostics").glob("record_*.json"):
        shutil.copy2(path, target / "diagnostics" / path.name)


def share_values(source: Path, target: Path) -> None:
    """Copy the chain's cached batch values (keyed by batch and proxy, so any variant may read them)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.json"):
        shutil.copy2(path, target / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--tables", default="random,designed", help="lookup_table.batch_sampling values, in turn")
    parser.add_argument("--records", type=int, default=24, help="records per table")
    parser.add_argument("--diverse", type=int, default=24, help="diverse batches (oracle.candidates)")
    parser.add_argument("--epochs", type=int, default=None, help="cycle-1 detector (default detector.epochs)")
    parser.add_argument("--pretrained", default="builtin", help="detector.pretrained ('null' = from scratch)")
    parser.add_argument("--n-pool", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=None, help="agent iterations (default agent.iterations)")
    parser.add_argument("--workers", type=int, default=2, help="records trained at once (one torch thread each)")
    parser.add_argument("--maximize", type=int, default=0, metavar="STEPS",
                        help="link d's control: a local search of STEPS swaps for the batch the variant's estimator "
                             "rates highest, from the best record; its batch is then scored like MGRAL's (0 = off)")
    parser.add_argument("--work", default="/tmp/mgral_chain")
    parser.add_argument("--out", default="bench/results/reward_chain.json")
    args = parser.parse_args()
    base_params = load_params(args.params)
    overrides = {"dataset.n_pool": args.n_pool, "dataset.image_size": args.image_size, "detector.imgsz": args.image_size,
                 "detector.pretrained": None if args.pretrained == "null" else args.pretrained,
                 "detector.workers_on_cpu": False, "simulation.initial_labeled": args.initial,
                 "selection.budget": args.budget, "lookup_table.records": args.records,
                 "lookup_table.diagnostics": True, "lookup_table.max_workers": args.workers,
                 "oracle.candidates": args.diverse, "tracking.version_pool": False}
    if args.epochs:
        overrides["detector.epochs"] = args.epochs
    if args.iterations:
        overrides["agent.iterations"] = args.iterations
    params = load_params(args.params, overrides)
    work = Path(args.work)
    base = work / "base"
    started = time.time()
    if not (base / "pool.csv").exists():
        d = params.dataset
        init_from_synthetic(base, SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool, n_val=d.n_val,
                                                n_test=d.n_test), params.simulation.initial_labeled, params.simulation.seed)
    detector = train_cycle_detector(base, params, 1)
    weights = str(detector.weights)
    torch.set_num_threads(1)  # from here on: `workers` single-threaded trainings side by side
    os.environ["MGRAL_MAX_WORKERS"] = str(args.workers)
    inference = infer_pool(base, detector.weights, params.detector, 1)
    cache_cycle_features(base, params, weights, lookup_dir(base, 1))
    print(f"cycle-1 detector: val mAP50-95 {detector.val_map50_95:.4f} ({detector.epochs} epochs, "
          f"pretrained {params.detector.pretrained}); {time.time() - started:.0f} s so far", flush=True)
    results = {"machine": {"cpu": cpu_model(), "nproc": os.cpu_count()}, "command": " ".join(["python", *sys.argv]),
               "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
               "detector_val_map50_95": detector.val_map50_95, "tables": {}}
    out = Path(args.out)
    if out.exists():  # a run started again: keep the variants already finished under the same settings
        earlier = json.loads(out.read_text())
        free = ("tables", "maximize")  # what a later sitting may change
        same = {k: v for k, v in earlier.get("settings", {}).items() if k not in free} == {
            k: v for k, v in results["settings"].items() if k not in free}
        if same and earlier.get("work") == str(work):
            results["tables"] = earlier.get("tables", {})
            started -= earlier.get("total_seconds", 0)  # seconds in all, over every sitting
    results["work"] = str(work)
    built: dict[tuple, Path] = {}
    for kind in args.tables.split(","):
        kind_params = variant_params(params, kind)
        project = work / kind
        if not project.exists():
            shutil.copytree(base, project, symlinks=True)
        for other, other_project in built.items():
            if other == table_key(kind_params):
                share_records(lookup_dir(other_project, 1), lookup_dir(project, 1))
            share_values(chain_dir(other_project, 1) / "values", chain_dir(project, 1) / "values")
        built.setdefault(table_key(kind_params), project)
        inference_path = str(project / Path(inference).relative_to(base))
        if kind in results["tables"]:
            print(f"\n== {kind}: finished in an earlier run (kept) ==")
            if args.maximize and "maximizer" not in results["tables"][kind]:
                results["tables"][kind]["maximizer"] = maximizer_control(project, kind_params, weights, inference_path,
                                                                         args.maximize, args.workers)
                write_json_atomic(out, {**results, "total_seconds": round(time.time() - started, 1)})
            continue
        kind_started, load = time.time(), os.getloadavg()[0]
        summary = build_table(project, kind_params, weights, inference_path, args.budget, args.workers)
        table_seconds = time.time() - kind_started
        select_batch(project, kind_params, inference_path, 1, "mgral", args.budget, weights)
        outputs = reward_chain(project, kind_params, 1, args.budget, weights, inference_path)
        figures = json.loads((project / "cycles" / "cycle_001" / "reward_chain.json").read_text())
        rows = chain_rows(figures)
        results["tables"][kind] = {"figures": figures, "rows": rows, "table_diagnostics": summary,
                                   "metrics_logged": sorted(outputs["metrics"]),
                                   "seconds": round(time.time() - kind_started, 1),
                                   "table_seconds": round(table_seconds, 1), "load_average_at_start": round(load, 2)}
        print_chain(kind, figures, rows, time.time() - kind_started, load)
        if args.maximize:
            results["tables"][kind]["maximizer"] = maximizer_control(project, kind_params, weights, inference_path,
                                                                     args.maximize, args.workers)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, {**results, "total_seconds": round(time.time() - started, 1)})
    print_comparison(results["tables"])
    print(f"\nmachine: {results['machine']['cpu']}, nproc {results['machine']['nproc']}; "
          f"{time.time() - started:.0f} s in all; results in {args.out}")


def maximizer_control(project: Path, params, weights: str, inference_path: str, steps: int, workers: int) -> dict:
    """Link d without the agent: from the best record's batch, `steps` proposals each swapping 1-5 of its images
    for random candidates, kept when the chain's estimator (the variant's value model and representation, no
    fallback) rates them higher. Its final batch is scored like MGRAL's (pseudo and true labels, cached).

    If this batch beats the best record on the estimate but not on true labels, the estimator (links b, c) is
    what breaks; if it beats it on both, the agent (link d) is.
    """
    import numpy as np

    from mgral_core.lookup_table import LookupTable
    from mgral_core.reward import RewardEstimator
    from mgral_core.seeding import seed_for
    from mgral_workspace.cycle_steps import pool_view
    from mgral_workspace.inference_cache import load_inference
    from mgral_workspace.lookup_store import load_table
    from mgral_workspace.reward_chain import ChainValues
    from mgral_workspace.selection import batch_representation

    started = time.time()
    table = LookupTable([r for r in load_table(lookup_dir(project, 1)) if not r.is_fallback])
    inference, view = load_inference(inference_path), pool_view(project, Path(inference_path))
    options = {**params.reward.estimator_options(params.lookup_table.value), "fallback_rule": "never", "max_fallbacks": 0}
    estimator = RewardEstimator(table, lambda ids: inference.subset(ids).embeddings,
                                seed=seed_for(params.selection.seed, 1, "estimator"),
                                features_of=batch_representation(params, inference, view.num_classes), **options)
    best = max(table, key=lambda r: r.value)
    batch = [str(i) for i in best.batch_ids]
    start_estimate = current = float(estimator(np.asarray(batch)))
    candidates = [str(i) for i in view.unlabeled_ids]
    rng = np.random.default_rng(0)
    accepted = 0
    for _ in range(steps):
        chosen = set(batch)
        outside = [c for c in candidates if c not in chosen]
        n_swap = int(rng.integers(1, 6))
        proposal = list(batch)
        for position, new in zip(rng.choice(len(batch), n_swap, replace=False),
                                 rng.choice(len(outside), n_swap, replace=False)):
            proposal[position] = outside[new]
        value = float(estimator(np.asarray(proposal)))
        if value > current:
            batch, current, accepted = proposal, value, accepted + 1
    values = ChainValues(project, params, 1, weights, inference_path)
    pseudo, true = values.many([(batch, "pseudo"), (batch, "true")], workers)
    figures = json.loads((project / "cycles" / "cycle_001" / "reward_chain.json").read_text())
    result = {"steps": steps, "accepted": accepted, "best_record": best.record_id,
              "start_estimate": start_estimate, "final_estimate": current, "best_record_value": best.value,
              "final_proxy_value": pseudo, "final_true": true, "best_record_true": figures.get("best_record_true"),
              "random_true_mean": figures.get("random_true_mean"), "mgral_true": figures.get("mgral_true"),
              "overlap_with_best_record": len(set(batch) & {str(i) for i in best.batch_ids}),
              "seconds": round(time.time() - started, 1)}
    print(f"  d control ({steps} swaps, {accepted} kept): estimate {start_estimate:.4f} -> {current:.4f} "
          f"(best record {best.value:.4f}); its batch: proxy {pseudo:.4f}, true {true:.4f} "
          f"(best record true {_shown(result['best_record_true'])}, random batches {_shown(result['random_true_mean'])}, "
          f"MGRAL {_shown(result['mgral_true'])}); {result['seconds']:.0f} s", flush=True)
    return result


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def print_chain(kind: str, figures: dict, rows: list[dict], seconds: float, load: float) -> None:
    print(f"\n== {kind} table: {figures['records']} records, {figures['diverse_batches']} diverse batches "
          f"({seconds:.0f} s, load {load:.1f} at start) ==")
    for r in rows:
        met = "" if r["met"] is None else ("  met" if r["met"] else "  NOT met")
        target = f"  (target {r['target']})" if r["target"] else ""
        print(f"  {r['link']}  {r['figure']:<78s} {_shown(r['value']):>8s}{target}{met}")
    baselines = {k[len("true_"):]: v for k, v in figures.items() if k.startswith("true_") and v is not None}
    print("  e  true-label value of each baseline's batch: " + ", ".join(
        f"{name} {value:.4f}" for name, value in sorted(baselines.items(), key=lambda kv: -kv[1])))
    print(f"     MGRAL {_shown(figures['mgral_true'])}; its gain over L alone {_shown(figures['mgral_true_gain'])}, "
          f"the ceiling's {_shown(figures['ceiling_true_gain'])}, the best record's {_shown(figures['best_record_true_gain'])}")


def print_comparison(tables: dict) -> None:
    if len(tables) < 2:
        return
    names = ("repeatability", "fidelity_diverse", "fidelity_records", "loo_spearman", "agent_minus_reference",
             "mgral_true", "best_record_true", "mgral_minus_best_record", "mgral_minus_ceiling", "mgral_rank")
    print("\n| figure | " + " | ".join(tables) + " |\n|---|" + "---:|" * len(tables))
    for name in names:
        print(f"| {name} | " + " | ".join(_shown(t["figures"].get(name)) for t in tables.values()) + " |")


if __name__ == "__main__":
    main()
