"""The paper's acceleration table at our scale: what the lookup table saves, and what one cycle costs.

On a built-in project at cycle 1 (default params.yaml sizes, the paper's proxy records: `lookup_table.value:
proxy`, whatever params.yaml's default value), times:
  * each step of an MGRAL cycle: detector training, pool inference (detections + embeddings),
    head-feature caching, the lookup table (R records, one at a time in this process), 200 agent
    iterations with the table's Wasserstein estimator, and the sum (one whole MGRAL selection cycle);
  * 10 agent iterations three ways: reward from the lookup table (the estimator), reward by direct
    training of the head proxy for each sampled batch, and by direct full fine-tuning (the
    Ultralytics trainer; the paper's "without lookup table" setting, with our proxy's recipe).
Prints a markdown table and writes bench/results/acceleration.json.

    python bench/acceleration.py                 # about 10 minutes on the 2-core CPU machine
    python bench/acceleration.py --records 16 --iterations 10 --work /tmp/mgral_accel
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from mgral_core.agent import AgentConfig, train_agent
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import infer_pool, pool_view, train_cycle_detector
from mgral_workspace.inference_cache import load_inference
from mgral_core.lookup_table import LookupRecord, LookupTable, random_batches
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_from_synthetic
from mgral_workspace.record_values import cache_cycle_features, record_value
from mgral_core.reward import RewardEstimator
from mgral_workspace.synthetic import SyntheticSpec


def timed(label: str, timings: dict, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    timings[label] = round(time.perf_counter() - start, 2)
    print(f"{label:45s} {timings[label]:8.2f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", default="/tmp/mgral_accel")
    parser.add_argument("--records", type=int, default=0, help="lookup records (0 = lookup_table.records)")
    parser.add_argument("--iterations", type=int, default=10, help="agent iterations per reward mode")
    parser.add_argument("--agent-iterations", type=int, default=0, help="a cycle's agent (0 = agent.iterations)")
    parser.add_argument("--out", default="bench/results/acceleration.json")
    args = parser.parse_args()
    # the paper's table: records are proxy trainings (the default MGRAL reads its values from detections)
    params = load_params(args.params, {"lookup_table.value": "proxy", "reward.estimator": "knn"})
    records = args.records or params.lookup_table.records
    project = Path(args.work) / "project"
    if not (project / "pool.csv").exists():
        d = params.dataset
        init_from_synthetic(project, SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool,
                                                   n_val=d.n_val, n_test=d.n_test),
                            params.simulation.initial_labeled, params.simulation.seed)
    timings: dict[str, float] = {}
    detector = timed("detector training (cycle 1)", timings, train_cycle_detector, project, params, 1)
    inference_path = timed("pool inference + embeddings", timings, infer_pool, project, detector.weights,
                           params.detector, 1)
    table_dir = Path(args.work) / "lookup_table"
    (table_dir / "head_features.pt").unlink(missing_ok=True)
    timed("head features (L, pool, val)", timings, cache_cycle_features, project, params, detector.weights, table_dir)
    candidates = PoolState.load(project).unlabeled_pool_ids
    k = min(params.selection.budget, len(candidates))
    batches = random_batches(candidates, k, records, seed=7)
    inference = load_inference(inference_path)

    def build_table() -> LookupTable:
        out = []
        for i, batch in enumerate(batches):
            value = record_value(project, params, table_dir, f"r{i}", detector.weights, batch.tolist(),
                                 inference_path)["value"]
            out.append(LookupRecord(f"r{i}", batch, inference.subset(batch).embeddings, value))
        return LookupTable(out)

    table = timed(f"lookup table, {records} records, 1 at a time", timings, build_table)
    view = pool_view(project, inference_path)
    r = params.reward
    embeddings_of = lambda ids: inference.subset(ids).embeddings  # noqa: E731
    estimator = RewardEstimator(table, embeddings_of, method=r.method, n_neighbors=r.n_neighbors,
                                n_projections=r.n_projections, n_quantiles=r.n_quantiles, seed=1,
                                fallback_rule="never")
    a = params.agent

    def agent_run(iterations: int, reward) -> None:
        config = AgentConfig(iterations=iterations, lr=a.lr, baseline_decay=a.baseline_decay, chunks=a.chunks,
                             decoder_hidden=a.decoder_hidden, seed=a.seed)
        train_agent(view.unlabeled_embeddings, k, reward, config, estimator.reference_value)

    from_table = lambda rows: estimator(view.unlabeled_ids[rows])  # noqa: E731
    cycle_iters = args.agent_iterations or a.iterations
    timed(f"agent, {cycle_iters} iterations, lookup-table reward", timings, agent_run, cycle_iters, from_table)
    timed(f"10x: {args.iterations} iterations, lookup-table reward", timings, agent_run, args.iterations, from_table)
    direct_head = lambda rows: record_value(project, params, table_dir, "direct", detector.weights,  # noqa: E731
                                            view.unlabeled_ids[rows].tolist(), inference_path)["value"]
    timed(f"10x: {args.iterations} iterations, direct head-proxy training", timings, agent_run, args.iterations,
          direct_head)
    full = load_params(args.params, {"lookup_table.value": "proxy", "reward.estimator": "knn",
                                     "lookup_table.proxy": "full"})
    direct_full = lambda rows: record_value(project, full, table_dir, "direct_full", detector.weights,  # noqa: E731
                                            view.unlabeled_ids[rows].tolist(), inference_path)["value"]
    timed(f"10x: {args.iterations} iterations, direct full fine-tune", timings, agent_run, args.iterations,
          direct_full)
    cycle_keys = [key for key in timings if not key.startswith("10x")]
    timings["one MGRAL selection cycle (sum of the above)"] = round(sum(timings[key] for key in cycle_keys), 2)
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "load_average_at_end": os.getloadavg(), "pool": len(candidates), "budget": k, "records": records,
              "timings_s": timings}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("\n| step | seconds |\n|---|---:|")
    for key, value in timings.items():
        print(f"| {key} | {value:.1f} |")
    print(f"\nload average at end: {np.round(os.getloadavg(), 2).tolist()}")


if __name__ == "__main__":
    main()
