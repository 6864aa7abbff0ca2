"""Does Wasserstein distance between batches explain their record values, and which value model uses it best?

For every cycle of a project (or every MGRAL run of a benchmark) that has a lookup table, one row:
  pairwise_w_cv   spread of the sliced-Wasserstein distances between the records' batches
                  (std / mean): how different random batches look to the estimator;
  mantel_pseudo   Spearman between the distance of two records' batches and the difference of
                  their values, over all pairs: > 0 when nearby batches have similar values,
                  which is what both value models assume;
  mantel_true     the same against the true-label values of the simulation-only diagnostics;
  loo_spearman    leave-one-out Spearman (estimate vs record) of the knn estimate, as the cycle logs it;
  loo_gp          the same for the Gaussian-process value model (reward.estimator gp): closed-form
                  leave-one-out under the hyperparameters fitted on every record;
  loo_gp_nested   the same with the hyperparameters refitted without the record left out (honest:
                  the left-out record took no part in choosing them);
  gp_l_over_median, gp_noise_ratio   the GP's fitted length scale (in median record distances) and
                  noise variance / signal variance;
  loo_mean_only   an estimator that returns the mean of the other records: always -1, the floor an
                  uninformative estimator sits near. A model that shrinks towards the mean when it
                  finds no signal (the GP does, by design) is pulled towards this floor too, so a
                  low loo_gp on a noisy table can mean "honestly uninformative" rather than "wrong";
  split_knn, split_gp   free of that artifact: over 20 random halvings of the records, each half
                  estimated from the other (the GP refitted on it), Spearman within the estimated
                  half (its training mean is one constant there), averaged over halves;
  split_knn_true, split_gp_true   the same estimates against the true-label values, when present
                  (with --synthetic: against the noise-free value function).
When the cycle's pool_inference.npz is there, the *_task columns repeat knn / gp / nested gp and the
Mantel test on task-aware descriptors (reward.representation task_aware).

`--synthetic` measures the same on synthetic tables whose value is a known smooth function of batch
composition (bench/scale_common.py: 0.3 + 0.2 x share of one cluster + noise; 256-d detector-like
embeddings), for Dirichlet-mixed and uniform random record batches, and adds fresh_knn / fresh_gp:
Spearman between each estimate and the true value on fresh mixed batches (out of sample).

    python bench/estimator_diagnostics.py --project projects/demo
    python bench/estimator_diagnostics.py --bench benchmark_results/quick
    python bench/estimator_diagnostics.py --synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scale_common import detector_like_embeddings, machine, mixed_batch, write_result
from scipy.stats import spearmanr

from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.reward import RewardEstimator, inverse_distance_estimate, leave_one_out_spearman
from mgral_core.value_model import GPValueModel, median_distance, nested_leave_one_out
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.lookup_store import load_table


def rank(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0 or not np.isfinite(b).all():
        return float("nan")
    return float(spearmanr(a, b).statistic)


def split_half(pairwise: np.ndarray, values: np.ndarray, targets: dict[str, np.ndarray], splits: int = 20,
               seed: int = 0) -> dict[str, float]:
    """Mean within-half Spearman of knn and gp estimates (fitted on the other half) against each target (R,)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    scores: dict[str, list[float]] = {}
    for _ in range(splits):
        order = rng.permutation(n)
        for train, test in ((order[: n // 2], order[n // 2:]), (order[n // 2:], order[: n // 2])):
            gp = GPValueModel(pairwise[np.ix_(train, train)], values[train])
            estimates = {"knn": np.array([inverse_distance_estimate(pairwise[i, train], values[train], 3)
                                          for i in test]),
                         "gp": gp.predict_many(pairwise[np.ix_(test, train)])[0]}
            for model, estimate in estimates.items():
                for name, target in targets.items():
                    scores.setdefault(f"split_{model}{name}", []).append(rank(target[test], estimate))
    return {key: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for key, v in scores.items()}


def model_columns(table: LookupTable, suffix: str = "", features_of=None, nested_max: int = 64,
                  truth: np.ndarray | None = None) -> tuple[dict, dict[str, RewardEstimator]]:
    """knn and gp leave-one-out Spearman on one table (and one representation), plus the GP's fit; and the
    two estimators."""
    knn = RewardEstimator(table, fallback_rule="never", features_of=features_of)
    gp = RewardEstimator(table, estimator="gp", features_of=features_of)
    values, pairwise = table.values, gp.pairwise_distances()
    upper = np.triu_indices(len(values), 1)
    h = gp.value_model.hyperparameters
    out = {f"loo_spearman{suffix}": leave_one_out_spearman(knn), f"loo_gp{suffix}": leave_one_out_spearman(gp),
           f"loo_gp_nested{suffix}": (rank(values, nested_leave_one_out(pairwise, values))
                                      if len(values) <= nested_max else float("nan")),
           f"gp_l_over_median{suffix}": h.lengthscale / median_distance(pairwise),
           f"gp_noise_ratio{suffix}": h.noise_ratio}
    if suffix:
        out[f"mantel{suffix}"] = rank(pairwise[upper], np.abs(values[:, None] - values[None])[upper])
    targets = {"": values, **({"_true": truth} if truth is not None else {})}
    split = split_half(pairwise, values, targets) if len(values) >= 8 else {}
    out.update({f"{key}{suffix}": value for key, value in split.items()})
    return out, {"knn": knn, "gp": gp}


def cycle_row(table_dir: Path, nested_max: int) -> dict | None:
    records = [r for r in load_table(table_dir).records if r.record_id.startswith("record_")]
    if len(records) < 4:
        return None
    table = LookupTable(records)
    distances = RewardEstimator(table, fallback_rule="never").pairwise_distances()  # (R, R) sliced, seed 0
    values = table.values
    upper = np.triu_indices(len(records), 1)
    true, truth = {}, None
    for path in (table_dir / "diagnostics").glob("record_*.json"):
        data = json.loads(path.read_text())
        true[data["record_id"]] = data.get("value_true_labels")
    if true and all(true.get(r.record_id) is not None for r in records):
        truth = np.array([true[r.record_id] for r in records])
    row = {"records": len(records), "pairwise_w_cv": distances[upper].std() / distances[upper].mean(),
           "mantel_pseudo": rank(distances[upper], np.abs(values[:, None] - values[None])[upper]),
           **model_columns(table, nested_max=nested_max, truth=truth)[0], "loo_mean_only": -1.0}
    if truth is not None:
        row["fidelity"] = rank(values, truth)
        row["mantel_true"] = rank(distances[upper], np.abs(truth[:, None] - truth[None])[upper])
    inference_path = table_dir.parent / "pool_inference.npz"
    if inference_path.exists():
        inference = load_inference(inference_path)
        num_classes = next((d.class_probs.shape[1] for d in inference.detections if d.class_probs is not None), 0)
        if num_classes:
            features_of = inference.task_aware_features(num_classes, 8)
            row.update(model_columns(table, "_task", features_of, nested_max, truth)[0])
    return row


def synthetic_rows(args: argparse.Namespace) -> list[dict]:
    embeddings, labels = detector_like_embeddings(args.pool, 256, 0)
    ids = np.arange(args.pool).astype(str)
    rows = []
    for kind in ("mixed", "random"):
        for n_records in args.records:
            for seed in args.seeds:
                rng = np.random.default_rng([seed, 7])

                def value(batch_rows: np.ndarray) -> float:
                    return 0.3 + 0.2 * float((labels[batch_rows] == 0).mean()) + float(rng.normal(0, args.noise))

                batches = [mixed_batch(rng, labels, args.budget) if kind == "mixed"
                           else rng.choice(args.pool, args.budget, replace=False) for _ in range(n_records)]
                table = LookupTable([LookupRecord(f"record_{r:03d}", ids[b], embeddings[b], value(b))
                                     for r, b in enumerate(batches)])
                noiseless = np.array([0.3 + 0.2 * float((labels[b] == 0).mean()) for b in batches])
                fresh = [mixed_batch(rng, labels, args.budget) for _ in range(args.fresh)]
                truth = [0.3 + 0.2 * float((labels[b] == 0).mean()) for b in fresh]
                start = time.perf_counter()
                columns, estimators = model_columns(table, nested_max=args.nested_max, truth=noiseless)
                row = {"table": kind, "records": n_records, "seed": seed, "noise": args.noise, **columns}
                for name, estimator in estimators.items():
                    row[f"fresh_{name}"] = rank(truth, [estimator.estimate_embeddings(embeddings[b]) for b in fresh])
                row["seconds"] = time.perf_counter() - start
                print(" ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                      flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", help="a project directory with cycles/cycle_NNN/lookup_table")
    parser.add_argument("--bench", help="a benchmark output directory (every mgral* run of every seed)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic tables with a known value function")
    parser.add_argument("--records", type=int, nargs="+", default=[16, 48, 200], help="--synthetic: table sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--synthetic: table seeds")
    parser.add_argument("--pool", type=int, default=2000, help="--synthetic: pool size")
    parser.add_argument("--budget", type=int, default=100, help="--synthetic: batch size k")
    parser.add_argument("--noise", type=float, default=0.005, help="--synthetic: sd of the record values' noise")
    parser.add_argument("--fresh", type=int, default=30, help="--synthetic: fresh batches per table")
    parser.add_argument("--nested-max", type=int, default=64, help="nested LOO (R refits) only up to this many records")
    parser.add_argument("--out", default=None, help="write the rows to bench/results/<out>.json")
    args = parser.parse_args()
    info = machine()
    print(f"{info['date']}  {info['cpu']}  nproc {info['nproc']}  load {info['loadavg']}", flush=True)
    if args.synthetic:
        frame = pd.DataFrame(synthetic_rows(args))
        summary = frame.groupby(["table", "records"]).mean(numeric_only=True).drop(columns=["seed", "noise"])
        print(summary.round(3).to_markdown())
        rows = frame.to_dict("records")
    else:
        if args.project:
            base = Path(args.project)
            tables = sorted(base.glob("cycles/cycle_*/lookup_table"))
        elif args.bench:
            base = Path(args.bench) / "runs"
            tables = sorted(base.glob("seed_*/mgral*/cycles/cycle_*/lookup_table"))
        else:
            raise SystemExit("give --project, --bench or --synthetic")
        rows = []
        for table in tables:
            row = cycle_row(table, args.nested_max)
            if row is not None:
                rows.append({"table": str(table.parent.relative_to(base)), **row})
        if not rows:
            raise SystemExit("no lookup table with at least 4 records found")
        frame = pd.DataFrame(rows)
        print(frame.round(3).to_markdown(index=False))
        numeric = frame.drop(columns=["table"]).mean(numeric_only=True)
        print("\nmean over tables:\n" + numeric.round(3).to_string())
    if args.out:
        write_result(args.out, {"command": "python bench/estimator_diagnostics.py " + " ".join(sys.argv[1:]),
                                "machine": info, "rows": rows})


if __name__ == "__main__":
    main()
