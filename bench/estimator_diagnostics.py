"""Does Wasserstein distance between batches explain their record values? One row per cycle.

For every cycle of a project (or every MGRAL run of a benchmark) that has a lookup table:
  pairwise_w_cv   spread of the sliced-Wasserstein distances between the records' batches
                  (std / mean): how different random batches look to the estimator;
  mantel_pseudo   Spearman between the distance of two records' batches and the difference of
                  their values, over all pairs: > 0 when nearby batches have similar values,
                  which is what the inverse-distance estimate assumes;
  mantel_true     the same against the true-label values of the simulation-only diagnostics;
  loo_spearman    the leave-one-out Spearman logged by the cycle (estimate vs record);
  loo_mean_only   the same for an estimator that returns the mean of the other records: always
                  -1, the floor an uninformative estimator sits near.

    python bench/estimator_diagnostics.py --project projects/demo
    python bench/estimator_diagnostics.py --bench benchmark_results/quick
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from mgral_core.lookup_table import LookupTable
from mgral_workspace.lookup_store import load_table
from mgral_core.reward import leave_one_out_spearman
from mgral_core.wasserstein import build_index, distances_to_records


def cycle_row(table_dir: Path) -> dict | None:
    records = [r for r in load_table(table_dir).records if r.record_id.startswith("record_")]
    if len(records) < 4:
        return None
    index = build_index([r.embeddings for r in records], "sliced", n_projections=128, n_quantiles=128, seed=0)
    distances = np.array([distances_to_records(r.embeddings, index) for r in records])  # (R, R)
    values = np.array([r.value for r in records])
    upper = np.triu_indices(len(records), 1)
    row = {"records": len(records), "pairwise_w_cv": distances[upper].std() / distances[upper].mean(),
           "mantel_pseudo": spearmanr(distances[upper], np.abs(values[:, None] - values[None])[upper]).statistic,
           "loo_spearman": leave_one_out_spearman(LookupTable(records)), "loo_mean_only": -1.0}
    true = {}
    for path in (table_dir / "diagnostics").glob("record_*.json"):
        data = json.loads(path.read_text())
        true[data["record_id"]] = data.get("value_true_labels")
    if true and all(true.get(r.record_id) is not None for r in records):
        truth = np.array([true[r.record_id] for r in records])
        row["mantel_true"] = spearmanr(distances[upper], np.abs(truth[:, None] - truth[None])[upper]).statistic
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", help="a project directory with cycles/cycle_NNN/lookup_table")
    parser.add_argument("--bench", help="a benchmark output directory (every mgral* run of every seed)")
    args = parser.parse_args()
    if args.project:
        base = Path(args.project)
        tables = sorted(base.glob("cycles/cycle_*/lookup_table"))
    elif args.bench:
        base = Path(args.bench) / "runs"
        tables = sorted(base.glob("seed_*/mgral*/cycles/cycle_*/lookup_table"))
    else:
        raise SystemExit("give --project or --bench")
    rows = []
    for table in tables:
        row = cycle_row(table)
        if row is not None:
            rows.append({"table": str(table.parent.relative_to(base)), **row})
    if not rows:
        raise SystemExit("no lookup table with at least 4 records found")
    frame = pd.DataFrame(rows)
    print(frame.round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()
