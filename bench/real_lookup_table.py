"""A real lookup table, cheaply: head-proxy records on a cycle that already has its detector and pool inference.

Takes a project (a copy of a benchmark seed's `base`, or any project) whose cycles/cycle_NNN/ holds
detector/best.pt and pool_inference.npz, and writes N records into cycles/cycle_NNN/lookup_table as a
cycle would (the same `record_value` and `save_record`; batches from `random_batches` or
`mixed_batches`, seeded by --seed). With --true-labels (simulation projects only) each batch is also
trained with the oracle's labels, written as the per-cycle diagnostics are
(lookup_table/diagnostics/record_NNN.json, `value_true_labels`), so bench/estimator_diagnostics.py
can compare the estimators against both values. A re-run skips finished records. It trains nothing
but the head proxy (about 3-4 s per record on the AMD EPYC, twice that with --true-labels).

    cp -r benchmark_results/quick/runs/seed_0/base /tmp/real && \\
    python bench/real_lookup_table.py --project /tmp/real --cycle 1 --records 48 --true-labels && \\
    python bench/estimator_diagnostics.py --project /tmp/real
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mgral_core.lookup_table import LookupRecord, mixed_batches, random_batches
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import load_params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.lookup_store import load_record, save_record
from mgral_workspace.pool import PoolState
from mgral_workspace.record_values import cache_cycle_features, record_value, true_label_record
from mgral_workspace.selection import lookup_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", required=True)
    parser.add_argument("--cycle", type=int, default=1)
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--budget", type=int, default=None, help="batch size k (default: selection.budget)")
    parser.add_argument("--batch-sampling", choices=["random", "mixed"], default="random")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--true-labels", action="store_true", help="also train each batch with the oracle's labels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    project = Path(args.project)
    params = load_params(project / "params.yaml")
    cycle_dir = project / "cycles" / f"cycle_{args.cycle:03d}"
    weights, inference_path = cycle_dir / "detector" / "best.pt", cycle_dir / "pool_inference.npz"
    for needed in (weights, inference_path):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run the cycle's training and pool inference first")
    table_dir = lookup_dir(project, args.cycle)
    candidates = PoolState.load(project).unlabeled_pool_ids
    k = min(args.budget or params.selection.budget, len(candidates))
    if args.batch_sampling == "random":
        batches = random_batches(candidates, k, args.records, seed=args.seed)
    else:
        embeddings = load_inference(inference_path).subset(list(candidates)).embeddings
        batches = mixed_batches(candidates, embeddings, k, args.records, args.seed)
    start = time.time()
    cache_cycle_features(project, params, weights, table_dir)
    print(f"head features cached in {time.time() - start:.0f} s", flush=True)
    inference = load_inference(inference_path)
    for i, batch in enumerate(batches):
        record_id = f"record_{i:03d}"
        ids = [str(x) for x in batch]
        record = load_record(table_dir, record_id)
        if record is None:
            result = record_value(project, params, table_dir, record_id, weights, ids, inference_path)
            value = result.pop("value")
            save_record(table_dir, LookupRecord(record_id, np.asarray(ids), inference.subset(ids).embeddings, value,
                                                {**result, "batch_sampling": args.batch_sampling}))
        else:
            value = record.value
        line = f"{record_id}: value {value:.4f}"
        diagnostic = table_dir / "diagnostics" / f"{record_id}.json"
        if args.true_labels:
            if not diagnostic.exists():
                true = true_label_record(project, params, table_dir, weights, ids)
                write_json_atomic(diagnostic, {"record_id": record_id, "value_true_labels": true["value"],
                                               "value_other_seeds": None})
            line += f", true labels {json.loads(diagnostic.read_text())['value_true_labels']:.4f}"
        print(f"{line}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
