"""Hierarchical selection (agent.shortlist) at VOC, COCO and 1M scale: speed of the agent with a shortlist vs the full pool.

Synthetic pool and lookup table as in bench/agent_scale.py (table records drawn from the whole
pool, as the pipeline draws them). Each configuration runs in a fresh subprocess through
`mgral_core.strategies.mgral.train_and_select` (shortlist -> `config_for_pool` -> training ->
top-k), the path MgralStrategy uses. Reported: time to shortlist, median training iteration
(first dropped as warm-up), inference (scoring the candidates the agent reads + top-k), peak
memory, and the agent's whole selection for the paper's iterations (2,200 at VOC, 800 at COCO and
1M; extrapolated: shortlist + iterations x median iteration + inference). Speedups are full pool / shortlist.

What it does not measure: the selection quality a shortlist costs. That needs detector trainings
on the built-in benchmark (`mgral benchmark` with agent.shortlist set), left to a benchmark run.

  python bench/hierarchical.py                       # COCO full vs shortlists of 4k and 8k, and 1M (~6 min)
  python bench/hierarchical.py --scales voc  # VOC full vs shortlists of 4k and 8k (not run yet; a 4k
                                             # shortlist is below agent.large_pool: one sequence, slower)
  python bench/hierarchical.py --scales coco --shortlists 0 9380
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import numpy as np
from scale_common import (
    add_threads_argument,
    detector_like_embeddings,
    figure,
    machine,
    peak_rss_gib,
    run_child,
    synthetic_table,
    write_result,
)

from mgral_core.agent import AgentConfig
from mgral_workspace.config import AgentParams
from mgral_core.reward import RewardEstimator
from mgral_core.shortlist import shortlist_rows
from mgral_core.strategies.mgral import train_and_select

LARGE_POOL = AgentParams().large_pool  # the default of params.yaml agent.large_pool
SCALES = {"voc": (16_551, 1_000, 200), "coco": (117_266, 2_345, 150), "1m": (1_000_000, 10_000, 100)}
PAPER_ITERATIONS = {"voc": 2_200, "coco": 800, "1m": 800}  # the paper's VOC and COCO settings; 1M as COCO
ITERATION_TARGET_S = {"voc": 0.25, "coco": 1.0, "1m": 1.0}
DIM = 256


def child(args: argparse.Namespace) -> dict:
    embeddings, labels = detector_like_embeddings(args.pool, DIM, args.seed)
    table = synthetic_table(embeddings, labels, args.budget, args.records, args.seed)
    estimator = RewardEstimator(table, seed=args.seed)
    ids = np.arange(len(embeddings)).astype(str)
    start = time.perf_counter()
    rows = shortlist_rows(embeddings, args.budget, args.shortlist, args.seed, args.method)
    shortlist_s = time.perf_counter() - start if args.shortlist else 0.0
    stamps: list[float] = []
    config = AgentConfig(iterations=args.iterations, seed=args.seed, threads=args.threads)
    chosen, agent, _ = train_and_select(embeddings, args.budget, lambda r: estimator(ids[r], embeddings[r]), config,
                                        estimator.reference_value, shortlist=args.shortlist,
                                        shortlist_method=args.method, large_pool=LARGE_POOL,
                                        progress=lambda i, v: stamps.append(time.perf_counter()))
    inference_s = time.perf_counter() - stamps[-1]
    assert len(set(chosen.tolist())) == args.budget and set(chosen.tolist()) <= set(rows.tolist())
    per_iteration = np.diff(stamps)
    return {"candidates": len(rows), "shortlist_s": shortlist_s, "iteration_s": float(np.median(per_iteration)),
            "iterations_timed": len(per_iteration), "inference_s": inference_s, "config": asdict(agent.config),
            "peak_rss_gib": peak_rss_gib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["coco", "1m"], choices=list(SCALES))
    parser.add_argument("--shortlists", type=int, nargs="+", default=None,
                        help="shortlist sizes (0 = full pool); default: coco 0, 4k, 8k; 1m 4k")
    parser.add_argument("--method", default="kmeans", choices=["kmeans", "random"])
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    parser.add_argument("--out", default="hierarchical")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shortlist", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}", flush=True)
    runs = []
    for scale in args.scales:
        pool, budget, records = SCALES[scale]
        sizes = args.shortlists if args.shortlists is not None else ([4 * budget] if scale == "1m"
                                                                       else [0, 4 * budget, 8 * budget])
        print(f"{scale}: pool {pool:,}, budget {budget:,}, {records} records, shortlist method {args.method}")
        full = None
        for size in sizes:
            iterations = 6 if size == 0 else 16
            res = run_child([__file__, "--child", "--pool", str(pool), "--budget", str(budget), "--records",
                             str(records), "--shortlist", str(size), "--iterations", str(iterations),
                             "--method", args.method, "--seed", str(args.seed), "--threads", str(args.threads)])
            paper_iterations = PAPER_ITERATIONS[scale]
            cycle_s = res["shortlist_s"] + paper_iterations * res["iteration_s"] + res["inference_s"]
            label = (f"[{scale} {'full pool' if size == 0 else f'shortlist {size:,}'}, {res['candidates']:,} read, "
                     f"{args.threads} thread{'s' if args.threads > 1 else ''}]")
            target = ITERATION_TARGET_S[scale]
            memory_target = 8 if scale == "1m" else 4
            figures = [
                figure(f"{label} shortlisting", res["shortlist_s"], "s", "-", None),
                figure(f"{label} iteration (median of {res['iterations_timed']})", res["iteration_s"], "s",
                       f"<= {target} s", res["iteration_s"] <= target),
                figure(f"{label} inference (score + top-k)", res["inference_s"], "s", "<= 30 s",
                       res["inference_s"] <= 30),
                figure(f"{label} peak memory", res["peak_rss_gib"], "GiB", f"<= {memory_target} GiB",
                       res["peak_rss_gib"] <= memory_target),
                figure(f"{label} agent selection, {paper_iterations:,} iterations (extrapolated)", cycle_s / 60,
                       "min", "-", None)]
            if size == 0:
                full = res
            elif full is not None:
                figures.append(figure(f"{label} iteration speedup vs full pool",
                                      full["iteration_s"] / res["iteration_s"], "x", "-", None))
                figures.append(figure(f"{label} inference speedup vs full pool",
                                      full["inference_s"] / res["inference_s"], "x", "-", None))
            runs.append({"scale": scale, "shortlist": size, **res, "figures": figures})
    write_result(args.out, {"command": "python bench/hierarchical.py " + " ".join(sys.argv[1:]), "machine": info,
                            "load_after": machine()["loadavg"], "method": args.method, "large_pool": LARGE_POOL,
                            "runs": runs})


if __name__ == "__main__":
    main()
