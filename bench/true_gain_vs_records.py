"""Does MGRAL's batch bring more than the best batch of its own lookup table? (issue 15, last target; chain link e
measured by the benchmark's real fine-tune instead of the head proxy)

Takes a finished `mgral benchmark --out` folder and one MGRAL strategy of it. For every seed and every cycle c
that selected a batch, three batches are compared on the same labeled set L (the images labeled before cycle c):
* `mgral`: the batch the strategy selected (its benchmark cell of cycle c + 1 is the fine-tune with training
  seed 0; further training seeds are trained here);
* `best_record`: the table record of cycle c with the highest value (for the default MGRAL, the class gain
  that is also its reward), i.e. what "pick the best of the table's batches" would have labeled;
* `random_record`: the table's first record, a random batch under `lookup_table.batch_sampling: random`.
Each is labeled with the oracle's true labels (on the side: `cycle_steps.train_counterfactual_detector`; the
images of a record are not labeled in the campaign's pool) and trained exactly as the benchmark trains cycle c + 1 (warm
start from the campaign's cycle-c detector, `finetune_epochs`, the same training seeds for every batch:
common random numbers), then scored on the test split. The campaign itself is never changed: trainings go
to --work, one JSON per (seed, cycle, batch, training seed), so a run started again resumes; the weights
are deleted once scored. Each JSON holds the digest of its L and batch: a result is reused only for the same
two (another strategy's campaign of the seed, run with the same --work, has other batches and is retrained).

Prints, per seed and cycle, the test mAP50-95 of the three (mean over training seeds) and the share of
cycles in which MGRAL's batch is at least the best record's (target: >= 2 of 3 cycles), and the paired
differences over all (seed, cycle) pairs with their 95 % t-interval. Results: --out (default
bench/results/true_gain_vs_records.json).

  python bench/true_gain_vs_records.py --bench /work/bench_out/c3 [--strategy SPEC] [--seeds 0,1,2]
      [--repeats 2] [--workers 2] [--work /tmp/true_gain] [--out bench/results/true_gain_vs_records.json]
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

import numpy as np

from mgral_core.benchmark_analysis import paired_comparison
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.benchmark import cell_path, run_dir
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import evaluate_split, train_counterfactual_detector, training_seed
from mgral_workspace.lookup_store import load_table
from mgral_workspace.pool import PoolState
from mgral_workspace.pool_summary import pool_digest
from mgral_workspace.provenance import cpu_model
from mgral_workspace.selection import lookup_dir

REPO = Path(__file__).resolve().parent.parent
BATCHES = ("mgral", "best_record", "random_record")


def cycle_batches(project: Path, cycle: int) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, float | None]]]:
    """L before `cycle` and the three batches of that cycle with their table values (None: not a record)."""
    pool = PoolState.load(project)
    labeled = pool.labeled_pool_ids_before(cycle)
    selected = pool.labeled_pool_ids_in(cycle)
    if len(selected) == 0:
        raise SystemExit(f"{project}: cycle {cycle} selected no batch (is the campaign finished?)")
    records = load_table(lookup_dir(project, cycle)).records
    if not records:
        raise SystemExit(f"{lookup_dir(project, cycle)}: no lookup-table records (is {project.name} an MGRAL run?)")
    best = max(records, key=lambda r: r.value)
    return labeled, {"mgral": (selected, None), "best_record": (best.batch_ids.astype(str), best.value),
                     "random_record": (records[0].batch_ids.astype(str), records[0].value)}


def batch_digest(labeled: np.ndarray, batch_ids: np.ndarray) -> str:
    """What a fine-tune's result depends on beside the campaign's cycle-c detector: L and the batch (sorted)."""
    text = "\n".join(sorted(map(str, labeled))) + "\n--\n" + "\n".join(sorted(map(str, batch_ids)))
    return pool_digest(text.encode())


def reusable(path: Path, digest: str) -> bool:
    """A finished result at `path` for this L and batch; a result of other batches (or of an older run that
    stored no digest) is not."""
    return path.exists() and json.loads(path.read_text()).get("batch_digest") == digest


def fine_tune(project: Path, params, cycle: int, batch_ids: np.ndarray, repeat: int, out: Path) -> dict:
    """The benchmark's training of cycle `cycle` + 1 had `batch_ids` (with the oracle's labels) been cycle
    `cycle`'s batch, with training seed `repeat` (0 = the cell's), scored on test; the weights are removed
    afterwards (`cycle_steps.train_counterfactual_detector`: the campaign's project is not changed)."""
    seed = training_seed(params, cycle + 1, repeat)
    started = time.perf_counter()
    trained = train_counterfactual_detector(project, params, cycle + 1, batch_ids, out, seed, log=lambda _: None)
    test = evaluate_split(project, trained.weights, params, "test")
    result = {"map50_95": test.map50_95, "map50": test.map50, "val_map50_95": trained.val_map50_95,
              "labeled": json.loads((out / "trained.json").read_text())["labeled"], "seed": seed,
              "seconds": round(time.perf_counter() - started, 1)}
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="a finished `mgral benchmark --out` folder")
    parser.add_argument("--strategy", default=None, help="the MGRAL spec (default: plan.json's first mgral one)")
    parser.add_argument("--seeds", default=None, help="comma-separated (default: plan.json's)")
    parser.add_argument("--repeats", type=int, default=2, help="training seeds per batch (0 is the cell's)")
    parser.add_argument("--workers", type=int, default=2, help="trainings at once")
    parser.add_argument("--work", type=Path, default=Path("/tmp/true_gain"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "true_gain_vs_records.json",
                        help="the results file")
    args = parser.parse_args()
    plan = json.loads((args.bench / "plan.json").read_text())
    spec = args.strategy or next(s for s in plan["strategies"] if s.split("@")[0] == "mgral")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else plan["seeds"]
    cycles = list(range(1, plan["cycles"] + 1))
    jobs, batches, stale = [], {}, 0
    for seed in seeds:
        project = run_dir(args.bench, spec, seed)
        params = load_params(project / "params.yaml")
        for cycle in cycles:
            if not cell_path(project, cycle + 1).exists():
                raise SystemExit(f"{project}: cycle {cycle + 1} has no result cell yet; finish the benchmark first")
            labeled, three = cycle_batches(project, cycle)
            batches[(seed, cycle)] = {name: {"images": len(ids), "table_value": value}
                                      for name, (ids, value) in three.items()}
            for name, (ids, _) in three.items():
                digest = batch_digest(labeled, ids)
                for repeat in range(args.repeats):
                    path = args.work / f"seed_{seed}" / f"cycle_{cycle}" / f"{name}_repeat_{repeat}.json"
                    if name == "mgral" and repeat == 0:  # the benchmark's own cell
                        cell = json.loads(cell_path(project, cycle + 1).read_text())
                        write_json_atomic(path, {"map50_95": cell["map50_95"], "map50": cell["map50"],
                                                 "labeled": cell["labeled"], "from": "benchmark cell",
                                                 "batch_digest": digest})
                    if not reusable(path, digest):
                        stale += path.exists()
                        jobs.append((project, params, cycle, ids, repeat, path, digest))
    print(f"true gain vs records: {args.bench}, {spec}, seeds {seeds}, cycles {cycles}, {args.repeats} training "
          f"seeds; {len(jobs)} fine-tunes to run on {args.workers} at once ({cpu_model()}, nproc {os.cpu_count()})"
          + (f"; {stale} results in {args.work} are of other batches or hold no digest: trained again" if stale else ""),
          flush=True)
    started = time.perf_counter()

    def run(job) -> None:
        project, params, cycle, batch_ids, repeat, path, digest = job
        result = fine_tune(project, params, cycle, batch_ids, repeat, path.with_suffix(".training"))
        write_json_atomic(path, {**result, "batch_digest": digest})
        print(f"  {path.relative_to(args.work)}: test mAP50-95 {result['map50_95']:.4f} ({result['seconds']} s; "
              f"{time.perf_counter() - started:.0f} s in)", flush=True)

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(run, jobs))
    rows = []
    for (seed, cycle), info in batches.items():
        row = {"seed": seed, "cycle": cycle}
        for name in BATCHES:
            values = [json.loads((args.work / f"seed_{seed}" / f"cycle_{cycle}" / f"{name}_repeat_{r}.json")
                                 .read_text())["map50_95"] for r in range(args.repeats)]
            row[name] = float(np.mean(values))
            row[f"{name}_table_value"] = info[name]["table_value"]
        rows.append(row)
    return report(rows, spec, args, time.perf_counter() - started, len(jobs))


def report(rows: list[dict], spec: str, args, seconds: float, trained: int) -> dict:
    print(f"\n{'seed':>4} {'cycle':>5} {'mgral':>8} {'best rec':>8} {'rand rec':>8}  mgral >= best record")
    for row in rows:
        print(f"{row['seed']:>4} {row['cycle']:>5} {row['mgral']:8.4f} {row['best_record']:8.4f} "
              f"{row['random_record']:8.4f}  {'yes' if row['mgral'] >= row['best_record'] else 'no'}")
    per_seed = {}
    for row in rows:
        per_seed.setdefault(row["seed"], []).append(row["mgral"] >= row["best_record"])
    cycles = max(len(v) for v in per_seed.values())
    needed = -(-2 * cycles // 3)  # 2 of 3 cycles
    met = {seed: sum(wins) >= needed for seed, wins in per_seed.items()}
    differences = {}
    for other in ("best_record", "random_record"):
        diffs = [row["mgral"] - row[other] for row in rows]
        c = paired_comparison(np.array(diffs))
        differences[other] = {"mean": c.mean, "ci95": [c.ci_low, c.ci_high], "wilcoxon_p": c.wilcoxon_p,
                              "mdd": c.mdd, "share_mgral_at_least": float(np.mean([d >= 0 for d in diffs]))}
        print(f"mgral - {other}: {c.mean:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] over {len(diffs)} (seed, cycle) "
              f"pairs, Wilcoxon p {c.wilcoxon_p}, detectable {c.mdd:.4f}; mgral >= it in "
              f"{sum(d >= 0 for d in diffs)}/{len(diffs)}")
    for seed, wins in per_seed.items():
        print(f"seed {seed}: MGRAL's batch >= the best record in {sum(wins)}/{len(wins)} cycles "
              f"(target >= {needed}): {'met' if met[seed] else 'not met'}")
    out = args.out
    result = {"bench": str(args.bench), "strategy": spec, "repeats": args.repeats, "rows": rows,
              "differences": differences, "target_per_seed": met, "machine": f"{cpu_model()}, nproc {os.cpu_count()}",
              "seconds": round(seconds, 1), "fine_tunes_run": trained,
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    write_json_atomic(out, result)
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
