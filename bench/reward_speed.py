"""Reward estimation at VOC scale: the fast (sliced) estimator against exact EMD (ot.emd2), same records, same run.

A lookup table of 200 records of 1,000 rows of 256-d detector-like embeddings (bench/scale_common.py)
and Q query batches. Both estimators are the real `RewardEstimator` (method "sliced" with the
default 128 projections x 128 quantiles, and method "exact": POT's ot.emd2 per record), fallback off.
Per query: the time to value the batch (distances to every record + the nearest-records estimate),
and the Spearman correlation between the two methods' distances to the records (do they rank the
records alike?). Also the share of the 3 nearest records they agree on and the difference of the
two estimates.

Two tables: "mixed" records and queries have Dirichlet cluster mixes (batches differ in
composition: the table a useful estimator needs, and the agent's batches); "random" records are
uniform random batches, as the pipeline draws them, with mixed queries.

Targets (issue #6; medians over queries): exact/fast time ratio >= 300, Spearman >= 0.9.

  python bench/reward_speed.py                            # VOC scale, 5 queries per table (~6 min)
  python bench/reward_speed.py --records 20 --queries 2   # quick check
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from scale_common import detector_like_embeddings, figure, machine, mixed_batch, synthetic_table, write_result

from mgral_core.reward import RewardEstimator, inverse_distance_estimate

TARGET_RATIO, TARGET_SPEARMAN = 300.0, 0.9


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def run_table(name: str, embeddings: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> dict:
    table = synthetic_table(embeddings, labels, args.budget, args.records, seed=args.seed, mixed=name == "mixed")
    fast = RewardEstimator(table, method="sliced", fallback_rule="never", seed=args.seed)
    exact = RewardEstimator(table, method="exact", fallback_rule="never")
    rng = np.random.default_rng([args.seed, 99])
    rows = []
    for q in range(args.queries):
        batch = embeddings[mixed_batch(rng, labels, args.budget)]  # (k, D)
        t_fast, d_fast = timed(lambda: fast.distances(batch), args.fast_repeats)
        t_fast_estimate, _ = timed(lambda: fast.estimate_embeddings(batch), args.fast_repeats)
        t_exact, d_exact = timed(lambda: exact.distances(batch), 1)
        near_fast, near_exact = np.argsort(d_fast)[:3], np.argsort(d_exact)[:3]
        rows.append({"fast_s": t_fast_estimate, "fast_distances_s": t_fast, "exact_s": t_exact,
                     "spearman": float(spearmanr(d_fast, d_exact).statistic),
                     "top3_shared": len(set(near_fast) & set(near_exact)) / 3,
                     "estimate_fast": fast.estimate_embeddings(batch),
                     "estimate_exact": inverse_distance_estimate(d_exact, table.values, exact.n_neighbors)})
        print(f"  [{name}] query {q}: fast {t_fast_estimate * 1e3:.2f} ms, exact {t_exact:.1f} s, "
              f"spearman {rows[-1]['spearman']:.3f}", flush=True)
    med = {key: float(np.median([r[key] for r in rows])) for key in ("fast_s", "exact_s", "spearman", "top3_shared")}
    spread = float(np.std(table.values))
    est_gap = float(np.median([abs(r["estimate_fast"] - r["estimate_exact"]) for r in rows]))
    print(f"{name} table ({args.records} records x {args.budget} rows, {embeddings.shape[1]}-d, "
          f"{args.queries} queries):")
    figures = [
        figure("fast estimator, median time per query", med["fast_s"] * 1e3, "ms", "-", None),
        figure("exact EMD (ot.emd2), median time per query", med["exact_s"], "s", "-", None),
        figure("speed ratio exact / fast", med["exact_s"] / med["fast_s"], "x", f">= {TARGET_RATIO:.0f}",
               med["exact_s"] / med["fast_s"] >= TARGET_RATIO),
        figure("Spearman of record distances, fast vs exact (median)", med["spearman"], "", f">= {TARGET_SPEARMAN}",
               med["spearman"] >= TARGET_SPEARMAN),
        figure("Spearman, worst query", float(min(r["spearman"] for r in rows)), "", "-", None),
        figure("3 nearest records shared (median share)", med["top3_shared"], "", "-", None),
        figure("|estimate fast - estimate exact| / std of record values", est_gap / spread if spread else 0.0, "",
               "-", None),
    ]
    return {"table": name, "queries": rows, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=16_551)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--fast-repeats", type=int, default=20)
    parser.add_argument("--tables", nargs="+", default=["mixed", "random"], choices=["mixed", "random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reward_speed")
    args = parser.parse_args()
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}")
    embeddings, labels = detector_like_embeddings(args.pool, args.dim, args.seed)
    results = [run_table(name, embeddings, labels, args) for name in args.tables]
    write_result(args.out, {"command": "python bench/reward_speed.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("tables", "out")),
        "settings": {k: v for k, v in vars(args).items()}, "machine": info,
        "load_after": machine()["loadavg"], "tables": results})


if __name__ == "__main__":
    main()
