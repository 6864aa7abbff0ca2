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

The value models on the same sliced distances (`--estimators`, default both): knn (the 3 nearest
records, the default) and gp (the Gaussian-process value model of reward.estimator gp). Per
estimator: the set-up a cycle pays once (sliced index; pairwise record distances; for gp the
leave-one-out hyperparameter fit) and the time per query (distances + estimate, and for gp its
predictive std); and exact (`reward.estimator: exact` on `class_gain`: a batch's value computed from per-image
class masses of synthetic detections, 20 classes, no records). `--no-exact` skips the exact EMD part (minutes) to time only the estimators.

  python bench/reward_speed.py                            # VOC scale, 5 queries per table (~6 min)
  python bench/reward_speed.py --records 20 --queries 2   # quick check
  python bench/reward_speed.py --no-exact --queries 20    # knn vs gp only (~1 min)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from scale_common import detector_like_embeddings, figure, machine, mixed_batch, synthetic_table, write_result

from mgral_core.detections import DetectionValue, Detections
from mgral_core.reward import RewardEstimator, inverse_distance_estimate
from mgral_core.value_model import GPValueModel

TARGET_RATIO, TARGET_SPEARMAN = 300.0, 0.9


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def time_estimators(name: str, table, embeddings: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> list:
    """Set-up and per-query time of each value model on the sliced distances (the agent's fast path)."""
    figures, per_query = [], {}
    for kind in args.estimators:
        if kind == "exact":
            figures += time_exact_value(name, len(embeddings), labels, args, per_query)
            continue
        start = time.perf_counter()
        estimator = RewardEstimator(table, method="sliced", estimator=kind, seed=args.seed)  # threshold / fit included
        setup = time.perf_counter() - start
        rng = np.random.default_rng([args.seed, 99])
        batches = [embeddings[mixed_batch(rng, labels, args.budget)] for _ in range(args.queries)]  # (k, D) each
        times = [timed(lambda: estimator(np.arange(args.budget).astype(str), batch), args.fast_repeats)[0]
                 for batch in batches]
        estimator.queries = 0
        per_query[kind] = float(np.median(times))
        extra = "" if kind == "knn" else (f", l = {estimator.value_model.hyperparameters.lengthscale:.3g}, "
                                          f"noise ratio {estimator.value_model.hyperparameters.noise_ratio:.3g}")
        if kind == "gp":
            fit_s, _ = timed(lambda: GPValueModel(estimator.pairwise_distances(), table.values), 3)
            d = estimator.distances(batches[0])  # (R,)
            predict_s, _ = timed(lambda: [estimator.value_model.predict(d) for _ in range(100)], 10)
        print(f"  [{name}] {kind}: set-up {setup:.2f} s, median query {per_query[kind] * 1e3:.2f} ms{extra}", flush=True)
        figures += [figure(f"{kind}: set-up per cycle (index, pairwise{', GP fit' if kind == 'gp' else ''})", setup,
                           "s", "-", None),
                    figure(f"{kind}: median time per query ({args.queries} queries)", per_query[kind] * 1e3, "ms",
                           "-", None)]
        if kind == "gp":
            figures += [figure("gp: of the set-up, the hyperparameter fit alone (median of 3)", fit_s, "s", "-", None),
                        figure("gp: of a query, the GP prediction alone (mean + std)", predict_s / 100 * 1e6, "us",
                               "-", None)]
    if {"knn", "gp"} <= set(per_query):
        figures.append(figure("gp / knn time per query", per_query["gp"] / per_query["knn"], "x", "-", None))
    return figures


def time_exact_value(name: str, pool: int, labels: np.ndarray, args: argparse.Namespace, per_query: dict) -> list:
    """`reward.estimator: exact` on `class_gain`: the set-up (per-image class masses of the whole pool, once per
    cycle) and the time to value one batch, on synthetic detections (0-7 boxes an image, 20 classes)."""
    rng = np.random.default_rng([args.seed, 7])
    detections = {}
    for i in range(pool):
        n = int(rng.integers(0, 8))
        probs = rng.dirichlet(np.ones(20) * 0.3, n).astype(np.float32)  # (n, 20)
        detections[f"img{i:06d}"] = Detections(np.zeros((n, 4), np.float32), probs.max(1), probs.argmax(1), probs)
    start = time.perf_counter()
    value = DetectionValue(detections, "class_gain", 0.05, 20, rng.integers(0, 50, 20).astype(float))
    setup = time.perf_counter() - start
    ids = np.array(list(detections))
    batches = [ids[mixed_batch(rng, labels, args.budget)] for _ in range(args.queries)]
    per_query["exact"] = float(np.median([timed(lambda: value(batch), args.fast_repeats)[0] for batch in batches]))
    print(f"  [{name}] exact class_gain: set-up {setup:.2f} s, median query {per_query['exact'] * 1e3:.3f} ms",
          flush=True)
    return [figure("exact (class_gain): set-up per cycle (per-image class masses)", setup, "s", "-", None),
            figure(f"exact (class_gain): median time per query ({args.queries} queries)", per_query["exact"] * 1e3,
                   "ms", "-", None)]


def run_table(name: str, embeddings: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> dict:
    table = synthetic_table(embeddings, labels, args.budget, args.records, seed=args.seed, mixed=name == "mixed")
    print(f"{name} table ({args.records} records x {args.budget} rows, {embeddings.shape[1]}-d):")
    estimator_figures = time_estimators(name, table, embeddings, labels, args)
    if args.no_exact:
        return {"table": name, "queries": [], "figures": estimator_figures}
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
    print(f"{name} table, fast vs exact ({args.queries} queries):")
    figures = estimator_figures + [
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
    parser.add_argument("--estimators", nargs="+", default=["knn", "gp", "exact"], choices=["knn", "gp", "exact"])
    parser.add_argument("--no-exact", action="store_true", help="skip exact EMD: time only the value models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reward_speed")
    args = parser.parse_args()
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}")
    embeddings, labels = detector_like_embeddings(args.pool, args.dim, args.seed)
    results = [run_table(name, embeddings, labels, args) for name in args.tables]
    write_result(args.out, {"command": "python bench/reward_speed.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k not in ("tables", "out", "estimators", "no_exact")) + (" --no-exact" if args.no_exact else ""),
        "settings": {k: v for k, v in vars(args).items()}, "machine": info,
        "load_after": machine()["loadavg"], "tables": results})


if __name__ == "__main__":
    main()
