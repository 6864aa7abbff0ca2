"""Which kinds of image did each strategy label, and where does its detector gain or lose? (issue 15: why the
default MGRAL falls behind random sampling at the third cycle of the built-in benchmark)

Takes a finished `mgral benchmark --out` folder of the built-in dataset, whose generator writes each image's
domain (clean, cluttered, degraded) into metadata.csv; a strategy never sees it. For every strategy and seed:
* the domains of each cycle's selected batch (and of the initial labeled set), against the test split's;
* the coverage gap of its labeled set after each selection (`mgral_core.coverage`, what a cycle logs as
  `labeled_cluster_gap`), recomputed from the cycle's pool inference;
* the test mAP50-95 of its last detector on each domain's test images (COCO-style, this repo's evaluation),
  and, per domain, the paired difference to the reference strategy over the seeds with its 95 % t-interval.

The domains are read only here, after the campaigns; the detectors are the campaigns' own (predictions on
the test split only, nothing is trained). Results: --out (default bench/results/domain_breakdown.json).

  python bench/domain_breakdown.py --bench /work/bench_out/c3 [--strategies random,SPEC] [--seeds 0,1,2]
      [--reference random] [--out bench/results/domain_breakdown.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mgral_backends import get_backend
from mgral_core.benchmark_analysis import paired_comparison
from mgral_core.coverage import selection_coverage
from mgral_core.evaluation import evaluate_detections
from mgral_core.seeding import seed_for
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.benchmark import run_dir, seed_dir
from mgral_workspace.config import load_params, split_strategy_list
from mgral_workspace.cycle_steps import cycle_dir, ground_truth
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info
from mgral_workspace.provenance import cpu_model

REPO = Path(__file__).resolve().parent.parent


def domains_of(project: Path) -> pd.Series:
    """{image id: domain} from the generator's metadata.csv; a clear error for a dataset without domains."""
    path = project / "metadata.csv"
    if not path.exists():
        raise SystemExit(f"{path}: no metadata.csv, so no domains (only the built-in dataset writes them)")
    meta = pd.read_csv(path)
    if "domain" not in meta.columns:
        raise SystemExit(f"{path}: no 'domain' column (columns: {', '.join(meta.columns)})")
    return meta.set_index("image_id")["domain"].astype(str)


def batch_domains(project: Path, domains: pd.Series) -> dict[int, dict[str, int]]:
    """{labeled cycle: {domain: images}} of the pool's labeled images (cycle 0 = the initial set)."""
    table = PoolState.load(project).table
    labeled = table[(table["split"] == "pool") & (table["labeled_cycle"] >= 0)]
    return {int(c): domains.reindex(group["image_id"]).value_counts().sort_index().to_dict()
            for c, group in labeled.groupby("labeled_cycle")}


def coverage_gaps(project: Path) -> dict[int, dict[str, float]]:
    """{cycle: {"batch_gap", "labeled_gap"}} of each selection, as `selection.coverage_clusters` measures it in a
    cycle (`mgral_core.coverage`, the cycle's pool inference; recomputed here for campaigns run before it)."""
    params = load_params(project / "params.yaml")
    s = params.selection
    table = PoolState.load(project).table.set_index("image_id")
    gaps = {}
    for path in sorted((project / "cycles").glob("cycle_*/pool_inference.npz")):
        cycle = int(path.parent.name.split("_")[1])
        inference = load_inference(path)
        labeled_cycle = table.loc[inference.ids, "labeled_cycle"].to_numpy()
        before, batch = (labeled_cycle >= 0) & (labeled_cycle < cycle), labeled_cycle == cycle
        if not batch.any() or s.coverage_clusters == 0:
            continue
        candidates = ~before
        rows = np.flatnonzero(batch[candidates])  # the batch's rows among the images unlabeled at the time
        c = selection_coverage(inference.embeddings[before], inference.embeddings[candidates], rows,
                               s.coverage_clusters, seed_for(s.seed, cycle, "coverage"))
        gaps[cycle] = {"batch_gap": round(c.batch_gap, 4), "labeled_gap": round(c.labeled_gap, 4)}
    return gaps


def last_cycle(project: Path) -> int:
    """The last cycle whose detector was trained (the campaign's final model)."""
    done = [int(p.name.split("_")[1]) for p in (project / "cycles").glob("cycle_*") if
            (p / "detector" / "best.pt").exists()]
    if not done:
        raise SystemExit(f"{project}: no trained detector under cycles/")
    return max(done)


def per_domain_map(project: Path, cycle: int, domains: pd.Series) -> dict[str, float]:
    """Test mAP50-95 of the cycle's detector on each domain's test images and on all of them ('all')."""
    params = load_params(project / "params.yaml")
    pool = PoolState.load(project)
    ids = pool.eval_ids("test")
    truth = ground_truth(project, pool, ids)
    detections, _ = get_backend(params.detector).predict(
        cycle_dir(project, cycle) / "detector" / "best.pt", [project / f for f in pool.files(ids)],
        want_embeddings=False)
    predictions = dict(zip(ids.tolist(), detections))
    num_classes = len(load_project_info(project).class_names)
    result = {}
    for domain in [*sorted(set(domains.reindex(ids))), "all"]:
        chosen = [i for i in ids.tolist() if domain == "all" or domains[i] == domain]
        result[domain] = float(evaluate_detections({i: truth[i] for i in chosen}, predictions,
                                                   num_classes).map50_95)
    return result


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="a finished `mgral benchmark --out` folder")
    parser.add_argument("--strategies", default=None, help="comma-separated specs (default: plan.json's)")
    parser.add_argument("--seeds", default=None, help="comma-separated (default: every seed folder)")
    parser.add_argument("--reference", default="random", help="the strategy the others are compared with")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "domain_breakdown.json")
    args = parser.parse_args()
    plan = json.loads((args.bench / "plan.json").read_text())
    strategies = split_strategy_list(args.strategies) if args.strategies else plan["strategies"]
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds else
             sorted(int(p.name.split("_")[1]) for p in (args.bench / "runs").glob("seed_*")))
    print(f"domain breakdown of {args.bench} on {cpu_model()} (nproc {len(os.sched_getaffinity(0))})",
          flush=True)
    label = {spec: spec if len(spec) <= 24 else f"{spec.split('@')[0]}#{i}" for i, spec in enumerate(strategies)}
    for spec, name in label.items():
        if name != spec:
            print(f"  {name} = {spec}")
    start, rows = time.time(), []
    for seed in seeds:
        for spec in strategies:
            project = run_dir(args.bench, spec, seed)
            if not (project / "pool.csv").exists():
                print(f"  seed {seed} {spec}: no campaign, skipped", flush=True)
                continue
            domains = domains_of(project)
            cycle = last_cycle(project)
            row = {"seed": seed, "strategy": spec, "cycle": cycle, "batches": batch_domains(project, domains),
                   "coverage": coverage_gaps(project), "test_map50_95": per_domain_map(project, cycle, domains)}
            rows.append(row)
            maps = "  ".join(f"{d} {v:.4f}" for d, v in row["test_map50_95"].items())
            print(f"  seed {seed} {label[spec]:24s} cycle {cycle}: {maps}", flush=True)
    test_domains = domains_of(seed_dir(args.bench, seeds[0]) / "base")
    test_ids = PoolState.load(seed_dir(args.bench, seeds[0]) / "base").eval_ids("test")
    test_share = (test_domains.reindex(test_ids).value_counts(normalize=True).sort_index()).round(3).to_dict()
    print(f"\ntest split's domains: {test_share}")
    print("\nselected images per domain (sum over seeds) by labeled cycle:")
    for spec in strategies:
        mine = [r for r in rows if r["strategy"] == spec]
        total: dict[int, dict[str, int]] = {}
        for r in mine:
            for c, counts in r["batches"].items():
                for d, n in counts.items():
                    total.setdefault(int(c), {}).setdefault(d, 0)
                    total[int(c)][d] += n
        shares = {c: {d: round(n / sum(v.values()), 2) for d, n in sorted(v.items())} for c, v in sorted(total.items())}
        print(f"  {label[spec]:24s} " + "  ".join(f"c{c} {s}" for c, s in shares.items()))
    print("\nthe labeled set's coverage gap after each selection (total variation to the pool's mix over k-means "
          "clusters, mgral_core.coverage; warned above selection.coverage_warn), mean [min, max] over seeds:")
    for spec in strategies:
        gaps = {}
        for r in rows:
            if r["strategy"] == spec:
                for c, g in r["coverage"].items():
                    gaps.setdefault(int(c), []).append(g["labeled_gap"])
        print(f"  {label[spec]:24s} " + "  ".join(f"c{c} {np.mean(v):.2f} [{min(v):.2f}, {max(v):.2f}]"
                                                   for c, v in sorted(gaps.items())))
    comparisons = {}
    reference = [r for r in rows if r["strategy"] == args.reference]
    print(f"\nlast detector's test mAP50-95 per domain, minus {args.reference}'s (paired over seeds):")
    for spec in strategies:
        if spec == args.reference:
            continue
        pairs = [(r, q) for r in rows if r["strategy"] == spec for q in reference if q["seed"] == r["seed"]]
        if not pairs:
            continue
        for domain in pairs[0][0]["test_map50_95"]:
            diff = np.array([r["test_map50_95"][domain] - q["test_map50_95"][domain] for r, q in pairs])
            c = paired_comparison(diff)
            comparisons.setdefault(spec, {})[domain] = {"n": c.n, "mean": c.mean, "ci_low": c.ci_low,
                                                        "ci_high": c.ci_high, "ahead": int((diff > 0).sum())}
            print(f"  {label[spec]:24s} {domain:10s} {c.mean:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
                  f"  ahead in {(diff > 0).sum()}/{len(diff)}")
    result = {"bench": str(args.bench), "seeds": seeds, "strategies": strategies, "reference": args.reference,
              "test_domain_share": test_share, "rows": rows, "comparisons": comparisons,
              "cpu": cpu_model(), "seconds": round(time.time() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(f"\n{len(rows)} campaigns in {time.time() - start:.0f} s; results: {args.out}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
