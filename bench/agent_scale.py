"""Agent speed and memory at PASCAL VOC, MS COCO and 1M-image pool sizes (issue #6, targets 2-4).

One training iteration = the real `train_agent` loop step: policy forward over the whole pool,
Gumbel-top-k sample, reward from the real `RewardEstimator` (sliced, default settings) on a
synthetic lookup table, backward, Adam. Times come from the `progress` callback (wall time
between consecutive iterations; the first is dropped as warm-up); the median is reported and
multiplied by 2,200 for the paper's VOC run (an extrapolation from the iterations measured, not a
2,200-iteration run). Every scale runs in a fresh subprocess, so its peak memory (ru_maxrss)
is its own: it includes the synthetic pool, the table and Python/torch themselves.

Modes (what `mgral_core.agent.config_for_pool` does is "auto"):
  paper   one sequence over the pool (chunks = 1), float32: the paper's model;
  pieces  pieces of LARGE_POOL_PIECE_STEPS (128) steps (chunks = ceil(U / 128)), float32;
  auto    the configured default: pieces of 128 steps + bfloat16 products above agent.large_pool
          (5,000) candidates on a CPU with native bfloat16, else `paper`.
Threads: torch intra-op threads in the agent, by default params.yaml's agent.threads (0 = one per
core, so 2 here); `--threads 1` for one core. `--estimator gp` values batches with the Gaussian-process
value model (reward.estimator gp) instead of the nearest records; its fit on the 200 records is part
of the set-up time reported.

Scales: voc (pool 16,551, budget 1,000, 200 records), coco (117,266, 2,345, 150) and 1m
(1,000,000, 10,000: inference only; training a 1M-step sequence needs ~20 KB a row, so at that size
the agent is trained on a shortlist, see bench/hierarchical.py).

  python bench/agent_scale.py                       # every scale and mode (~8 min)
  python bench/agent_scale.py --scales voc --modes auto
  python bench/agent_scale.py --scales voc --modes auto --estimator gp
  python bench/agent_scale.py --fidelity            # selections of each path vs the straightforward loop
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

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

from mgral_core.agent import (
    LARGE_POOL_PIECE_STEPS,
    AgentConfig,
    SamplingAgent,
    config_for_pool,
    score_pool,
    select_top_k,
    train_agent,
)
from mgral_workspace.config import AgentParams
from mgral_core.reward import RewardEstimator

SCALES = {"voc": (16_551, 1_000, 200), "coco": (117_266, 2_345, 150), "1m": (1_000_000, 10_000, 0)}
ITERATIONS = {("voc", "auto"): 40, ("voc", "pieces"): 12, ("voc", "paper"): 6,
              ("coco", "auto"): 12, ("coco", "pieces"): 5, ("coco", "paper"): 3}
LARGE_POOL = AgentParams().large_pool  # the default of params.yaml agent.large_pool
DIM = 256


def agent_config(mode: str, pool: int, seed: int = 0, iterations: int = 1, threads: int = 1) -> AgentConfig:
    base = AgentConfig(iterations=iterations, seed=seed, threads=threads)
    if mode == "paper":
        return base
    if mode == "pieces":
        return replace(base, chunks=-(-pool // LARGE_POOL_PIECE_STEPS))
    if mode == "auto":
        return config_for_pool(base, pool, LARGE_POOL)
    raise ValueError(mode)


def measure_training(embeddings: np.ndarray, labels: np.ndarray, k: int, records: int, config: AgentConfig,
                     seed: int = 0, estimator_kind: str = "knn") -> dict:
    """Train `config.iterations` iterations on the whole of `embeddings`; per-iteration wall times."""
    start = time.perf_counter()
    table = synthetic_table(embeddings, labels, k, records, seed)
    # sliced, default settings; knn computes its fallback threshold, gp fits its hyperparameters
    estimator = RewardEstimator(table, seed=seed, estimator=estimator_kind)
    setup = time.perf_counter() - start
    ids = np.arange(len(embeddings)).astype(str)
    reward_times: list[float] = []

    def reward(rows: np.ndarray) -> float:
        t = time.perf_counter()
        value = estimator(ids[rows], embeddings[rows])
        reward_times.append(time.perf_counter() - t)
        return value

    stamps = [time.perf_counter()]
    train_agent(embeddings, k, reward, config, estimator.reference_value,
                progress=lambda i, v: stamps.append(time.perf_counter()))
    per_iteration = np.diff(stamps)[1:] if len(stamps) > 2 else np.diff(stamps)  # drop the warm-up iteration
    return {"iteration_s": float(np.median(per_iteration)), "iteration_min_s": float(per_iteration.min()),
            "iteration_max_s": float(per_iteration.max()), "iterations_timed": int(len(per_iteration)),
            "reward_s": float(np.median(reward_times)), "table_and_estimator_setup_s": setup}


def child_train(args: argparse.Namespace) -> dict:
    embeddings, labels = detector_like_embeddings(args.pool, DIM, args.seed)
    config = agent_config(args.mode, args.pool, args.seed, args.iterations, args.threads)
    out = measure_training(embeddings, labels, args.budget, args.records, config, args.seed, args.estimator)
    return {**out, "config": asdict(config), "estimator": args.estimator, "peak_rss_gib": peak_rss_gib()}


def child_infer(args: argparse.Namespace) -> dict:
    embeddings, _ = detector_like_embeddings(args.pool, DIM, args.seed)
    config = agent_config(args.mode, args.pool, args.seed, threads=args.threads)
    agent = SamplingAgent(DIM, config)  # untrained: scoring costs the same whatever the weights
    rss_before = peak_rss_gib()
    start = time.perf_counter()
    chosen = select_top_k(agent, embeddings, args.budget)
    seconds = time.perf_counter() - start
    assert len(set(chosen.tolist())) == args.budget
    return {"inference_s": seconds, "config": asdict(config), "peak_rss_gib": peak_rss_gib(),
            "peak_rss_before_scoring_gib": rss_before}


def run_scales(scales: list[str], modes: list[str], seed: int, threads: int = 1, estimator: str = "knn") -> list[dict]:
    rows = []
    for scale in scales:
        pool, budget, records = SCALES[scale]
        print(f"{scale}: pool {pool:,}, budget {budget:,}, {records} records, {DIM}-d", flush=True)
        for mode in modes:
            if scale == "1m":
                res = run_child([__file__, "--child", "infer", "--pool", str(pool), "--budget", str(budget),
                                 "--mode", mode, "--seed", str(seed), "--threads", str(threads)])
                rows.append({"scale": scale, "mode": mode, **res, "figures": [
                    figure(f"[1m {mode}, {threads} thread(s)] inference: score 1M + top-10,000", res["inference_s"], "s", "<= 30 s",
                           res["inference_s"] <= 30),
                    figure(f"[1m {mode}] peak memory", res["peak_rss_gib"], "GiB", "<= 8 GiB",
                           res["peak_rss_gib"] <= 8)]})
                continue
            iterations = ITERATIONS[(scale, mode)]
            res = run_child([__file__, "--child", "train", "--pool", str(pool), "--budget", str(budget),
                             "--records", str(records), "--mode", mode, "--iterations", str(iterations),
                             "--seed", str(seed), "--threads", str(threads), "--estimator", estimator])
            it = res["iteration_s"]
            label = (f"[{scale} {mode}, chunks {res['config']['chunks']}, {res['config']['precision']}, "
                     f"{threads} thread{'s' if threads > 1 else ''}{', gp' if estimator == 'gp' else ''}]")
            figures = [figure(f"{label} iteration (median of {res['iterations_timed']})", it, "s",
                              "<= 0.25 s" if scale == "voc" else "<= 1 s", it <= (0.25 if scale == "voc" else 1.0)),
                       figure(f"{label} of which reward", res["reward_s"], "s", "-", None),
                       figure(f"{label} table + estimator set-up (once per cycle)", res["table_and_estimator_setup_s"],
                              "s", "-", None)]
            if scale == "voc":
                figures.append(figure(f"{label} 2,200 iterations (extrapolated)", it * 2200 / 60, "min", "<= 10 min",
                                      it * 2200 <= 600))
            figures.append(figure(f"{label} peak memory", res["peak_rss_gib"], "GiB",
                                  "<= 4 GiB" if scale == "coco" else "-",
                                  res["peak_rss_gib"] <= 4 if scale == "coco" else None))
            rows.append({"scale": scale, "mode": mode, **res, "figures": figures})
    return rows


def fidelity(seeds: list[int], pool: int = 2000, k: int = 100, iterations: int = 60) -> dict:
    """Train the same problem with the straightforward nn.LSTMCell loop and with each fast path.

    Known reward: the share of one cluster in the batch. Reports, per path and seed, the overlap of
    its final top-k with the straightforward loop's, the first iteration whose sampled batch differs
    (same seed, same Gumbel noise: any difference is numerical) and the last-10 reward.
    """
    embeddings, labels = detector_like_embeddings(pool, DIM, 0)
    target = int(np.argsort(np.bincount(labels))[len(np.bincount(labels)) // 2])  # a middling cluster

    def reward(rows: np.ndarray) -> float:
        return float((labels[rows] == target).mean())

    pieces = -(-pool // LARGE_POOL_PIECE_STEPS)
    paths = {"fast float32 (default)": {}, "bfloat16": {"precision": "bfloat16"},
             f"pieces of {LARGE_POOL_PIECE_STEPS}": {"chunks": pieces},
             f"pieces of {LARGE_POOL_PIECE_STEPS} + bfloat16 (large-pool path)": {"chunks": pieces,
                                                                                 "precision": "bfloat16"},
             "large-pool path on 2 threads": {"chunks": pieces, "precision": "bfloat16", "threads": 2}}
    results: dict[str, list[dict]] = {name: [] for name in paths}
    for seed in seeds:
        config = AgentConfig(iterations=iterations, seed=seed)
        reference_forward = SamplingAgent.forward
        SamplingAgent.forward = SamplingAgent.forward_reference  # the straightforward autograd loop
        try:
            ref_agent, ref_history = train_agent(embeddings, k, reward, config, float((labels == target).mean()))
        finally:
            SamplingAgent.forward = reference_forward
        ref_top = set(np.argsort(-score_pool(ref_agent, embeddings), kind="stable")[:k].tolist())
        for name, change in paths.items():
            agent, history = train_agent(embeddings, k, reward, replace(config, **change),
                                         float((labels == target).mean()))
            differs = next((i for i, (a, b) in enumerate(zip(history.rewards, ref_history.rewards)) if a != b), None)
            top = set(select_top_k(agent, embeddings, k).tolist())
            results[name].append({"seed": seed, "top_k_overlap": len(ref_top & top) / k,
                                  "first_differing_batch": differs,
                                  "last10_reward": float(np.mean(history.rewards[-10:])),
                                  "reference_last10_reward": float(np.mean(ref_history.rewards[-10:]))})
            print(f"  seed {seed} {name:<44s} top-{k} overlap {results[name][-1]['top_k_overlap']:.2f}, "
                  f"first differing batch {differs}, last-10 reward {results[name][-1]['last10_reward']:.3f} "
                  f"(reference {results[name][-1]['reference_last10_reward']:.3f})", flush=True)
    summary = {name: {"mean_top_k_overlap": float(np.mean([r["top_k_overlap"] for r in rows])),
                      "min_top_k_overlap": float(np.min([r["top_k_overlap"] for r in rows])), "runs": rows}
               for name, rows in results.items()}
    print(f"fidelity (pool {pool}, k {k}, {iterations} iterations, seeds {seeds}): mean top-k overlap with the "
          "straightforward loop")
    for name, s in summary.items():
        print(f"  {name:<46s} {s['mean_top_k_overlap']:.3f} (min {s['min_top_k_overlap']:.2f})")
    return {"pool": pool, "k": k, "iterations": iterations, "seeds": seeds, "paths": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["voc", "coco", "1m"], choices=list(SCALES))
    parser.add_argument("--modes", nargs="+", default=["auto", "pieces", "paper"], choices=["auto", "pieces", "paper"])
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    parser.add_argument("--estimator", choices=["knn", "gp"], default="knn", help="the reward estimator (reward.estimator)")
    parser.add_argument("--fidelity", action="store_true", help="compare selections with the straightforward loop")
    parser.add_argument("--fidelity-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="result name under bench/results (default per run kind)")
    parser.add_argument("--child", choices=["train", "infer"], help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_train(args) if args.child == "train" else child_infer(args)))
        return
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  avx512_bf16 {info['avx512_bf16']}  "
          f"load {info['loadavg']}  torch threads in the agent: {args.threads}", flush=True)
    command = "python bench/agent_scale.py " + " ".join(sys.argv[1:])
    if args.fidelity:
        write_result(args.out or "agent_fidelity", {"command": command, "machine": info,
                                                    **fidelity(args.fidelity_seeds)})
        return
    rows = run_scales(args.scales, args.modes, args.seed, args.threads, args.estimator)
    write_result(args.out or "agent_scale", {"command": command, "machine": info, "load_after": machine()["loadavg"],
                                             "large_pool": LARGE_POOL, "runs": rows})


if __name__ == "__main__":
    main()
