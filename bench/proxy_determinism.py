"""Is a head-proxy record bit-reproducible: repeated, with the other cores busy, and on another torch thread count?

Takes a finished `mgral benchmark --out` folder, builds seed S's cycle proxy from its first detector
(`runs/seed_<S>/base`, features cached in --work) and records the first strategy's batch with the oracle's
true labels `--repeats` times, idle and then with `--hogs` busy-loop processes on the cores, once per torch
thread count of `--threads`. Prints each value and the weights digest of its fine-tuned head.

  python bench/proxy_determinism.py --bench /work/bench_out/reward --work /tmp/pvf [--seed 0] [--threads 2,1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import torch

from scale_common import benchmark_seed, machine, write_result

from mgral_workspace.config import load_params
from mgral_workspace.record_values import cache_cycle_features, true_label_record


def busy() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="a finished `mgral benchmark --out` folder")
    parser.add_argument("--work", default="/tmp/proxy_vs_finetune", help="head features per seed (reused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="2,1", help="torch thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes during the loaded repeats")
    parser.add_argument("--out", default="proxy_determinism")
    args = parser.parse_args()
    seed_dir = Path(args.bench).resolve() / "runs" / f"seed_{args.seed}"
    try:
        seed = benchmark_seed(seed_dir)
    except FileNotFoundError as error:
        sys.exit(str(error))
    if not seed["runs"]:
        sys.exit(f"{seed_dir}: no strategy with a first selection")
    (run, batch), base, weights = seed["runs"][0], seed["base"], seed["weights"]
    params, table = load_params(base / "params.yaml"), Path(args.work) / seed_dir.name
    cache_cycle_features(base, params, weights, table)
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}  batch of "
          f"{run.name}, {len(batch)} images", flush=True)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for loaded in (False, True):
            hogs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.hogs if loaded else 0)]
            for hog in hogs:
                hog.start()
            try:
                for repeat in range(args.repeats):
                    start = time.time()
                    record = true_label_record(base, params, table, weights, batch)
                    rows.append({"threads": threads, "loaded": loaded, "repeat": repeat, "value": record["value"],
                                 "digest": record["weights_digest"], "seconds": round(time.time() - start, 1)})
                    print(f"  threads {threads}  {'loaded' if loaded else 'idle  '}  value {record['value']:.6f}  "
                          f"digest {record['weights_digest']}  {rows[-1]['seconds']} s", flush=True)
            finally:
                for hog in hogs:
                    hog.terminate()
    by_threads = {t: {(r["value"], r["digest"]) for r in rows if r["threads"] == t} for t in {r["threads"] for r in rows}}
    values = [r["value"] for r in rows]
    for threads, distinct in sorted(by_threads.items()):
        print(f"threads {threads}: {len(distinct)} distinct (value, digest) over idle and loaded repeats")
    print(f"largest difference over every run: {max(values) - min(values):.2e}")
    write_result(args.out, {"command": "python bench/proxy_determinism.py " + " ".join(sys.argv[1:]), "machine": info,
                            "rows": rows, "distinct_per_thread_count": {t: len(d) for t, d in by_threads.items()},
                            "largest_difference": max(values) - min(values)})


if __name__ == "__main__":
    main()
