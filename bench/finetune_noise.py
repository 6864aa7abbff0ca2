"""How much of a benchmark cell's outcome is the fine-tune's own training noise? (issue 14, section 4)

Takes a finished `mgral benchmark --out` folder. For each chosen (seed, strategy) cell it copies the
campaign's project, and re-runs the final fine-tune (the one whose test mAP50-95 the benchmark
reports) on exactly the same labeled images from the same first detector, once per training seed of
`--train-seeds`, each in a fresh process (`detector.isolate`), then evaluates it on the test split.
It prints, per cell, the test figures over the training seeds, and overall:

* the training-noise sd: the pooled within-cell sd over training seeds (same batch, other seed);
* the spread between strategies within a seed, from the benchmark's own cells;
* what averaging R fine-tunes per cell would do to the paired AUC differences' sd and to the
  minimum detectable AUC difference (80 % power, alpha 0.05, n seeds): the training noise of a
  paired difference shrinks by sqrt(R), the rest stays.

  python bench/finetune_noise.py --bench /work/bench_out/quick10 --seeds 0,1 --strategies random,cdal \\
      --train-seeds 0,1,2 [--work /tmp/finetune_noise]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scale_common import machine, write_result

from mgral_core.seeding import seed_for
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import evaluate_split, train_cycle_detector


def final_cycle(run: Path) -> int:
    """The cycle whose training the benchmark evaluates last (its highest cycle folder)."""
    return max(int(p.name.split("_")[1]) for p in (run / "cycles").glob("cycle_*"))


def refit(run: Path, work: Path, train_seed: int) -> dict:
    """The run's final fine-tune again, with detector.seed = train_seed, in a copy of the project."""
    cycle = final_cycle(run)
    copy = work / f"{run.parent.name}_{run.name}_train{train_seed}"
    if (copy / "result.json").exists():
        return json.loads((copy / "result.json").read_text())
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(f"cycle_{cycle:03d}", "cells"))
    params = load_params(copy / "params.yaml")
    params = params.model_copy(update={"detector": params.detector.model_copy(update={"seed": train_seed,
                                                                                      "isolate": True})})
    start = time.time()
    trained = train_cycle_detector(copy, params, cycle, log=lambda message: None)
    test = evaluate_split(copy, trained.weights, params, "test")
    result = {"seed": int(run.parent.name.split("_")[1]), "strategy": run.name, "train_seed": train_seed,
              "detector_seed": seed_for(train_seed, cycle, "detector"), "test_map50_95": test.map50_95,
              "val_map50_95": trained.val_map50_95, "seconds": round(time.time() - start, 1)}
    shutil.rmtree(copy)
    copy.mkdir(parents=True)
    (copy / "result.json").write_text(json.dumps(result))
    return result


def noise_figures(refits: pd.DataFrame, cells: pd.DataFrame, repeats: list[int]) -> dict:
    """Training-noise sd (pooled within (seed, strategy)), the benchmark's within-seed spread, and the
    paired AUC difference sd and MDD if each cell averaged R fine-tunes (one cycle: AUC diff = diff / 2)."""
    within = refits.groupby(["seed", "strategy"])["test_map50_95"].var(ddof=1).dropna()
    noise_sd = float(np.sqrt(within.mean()))
    final = cells[cells["labeled"] == cells["labeled"].max()]
    wide = final.pivot_table(index="seed", columns="strategy", values="map50_95")
    diffs = wide.drop(columns="random").sub(wide["random"], axis=0) / 2  # AUC differences, one cycle
    observed_sd = float(np.median(diffs.std(ddof=1)))
    n = len(wide)
    rest = max(observed_sd ** 2 - 2 * (noise_sd / 2) ** 2, 0.0)  # paired AUC diff: two cells' noise, halved
    out = {"training_noise_sd": noise_sd, "cells_with_repeats": int(len(within)),
           "within_seed_sd_between_strategies": float(np.median(final.groupby("seed")["map50_95"].std(ddof=1))),
           "observed_paired_auc_sd": observed_sd, "seeds": n, "training_share_of_paired_variance":
           min(1.0, 2 * (noise_sd / 2) ** 2 / observed_sd ** 2) if observed_sd > 0 else float("nan"), "by_repeats": {}}
    for r in repeats:
        sd = float(np.sqrt(rest + 2 * (noise_sd / 2) ** 2 / r))
        out["by_repeats"][r] = {"paired_auc_sd": sd, "mdd": float(np.sqrt(7.85 * sd ** 2 / n))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="a finished `mgral benchmark --out` folder")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--strategies", default="random,cdal")
    parser.add_argument("--train-seeds", default="0,1,2")
    parser.add_argument("--work", default="/tmp/finetune_noise", help="project copies; finished refits reused")
    parser.add_argument("--out", default="finetune_noise")
    args = parser.parse_args()
    bench, work = Path(args.bench).resolve(), Path(args.work)
    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}", flush=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for strategy in args.strategies.split(","):
            run = bench / "runs" / f"seed_{seed}" / strategy
            if not (run / "cycles").is_dir():
                sys.exit(f"{run}: no such finished campaign in {bench}")
            for train_seed in (int(s) for s in args.train_seeds.split(",")):
                rows.append(refit(run, work, train_seed))
                print(f"  seed {seed} {strategy:18s} training seed {train_seed}: test mAP50-95 "
                      f"{rows[-1]['test_map50_95']:.4f}  ({rows[-1]['seconds']} s)", flush=True)
    refits = pd.DataFrame(rows)
    cells = pd.read_csv(bench / "results.csv")
    figures = noise_figures(refits, cells, [1, 2, 3, 5])
    print(f"training-noise sd (same batch, other training seed): {figures['training_noise_sd']:.4f} test mAP50-95 "
          f"over {figures['cells_with_repeats']} cells; between strategies within a seed: "
          f"{figures['within_seed_sd_between_strategies']:.4f}")
    print(f"paired AUC differences: sd {figures['observed_paired_auc_sd']:.4f} over {figures['seeds']} seeds; the "
          f"training noise explains {figures['training_share_of_paired_variance']:.0%} of their variance")
    for r, f in figures["by_repeats"].items():
        print(f"  {r} fine-tune(s) per cell: paired AUC sd {f['paired_auc_sd']:.4f}, minimum detectable "
              f"difference {f['mdd']:.4f}")
    write_result(args.out, {"command": "python bench/finetune_noise.py " + " ".join(sys.argv[1:]), "machine": info,
                            "bench": str(bench), "refits": rows, "figures": figures})


if __name__ == "__main__":
    main()
