"""Signal-to-noise of lookup-table records: do records differ by batch more than by training seed?

For one base detector (cycle 1 of the built-in project) and N random batches of k pool images,
each configuration trains every batch's proxy record three times: pseudo-labels with seed A,
pseudo-labels with seed B, and true labels with seed A (simulation-only diagnostic). Prints per
configuration: repeatability = Spearman(A, B), fidelity = Spearman(A, true), between-batch std
of A, seed noise = std(A - B) / sqrt(2), seconds per record; for mAP50-95 and mAP50.

Usage: python bench/lookup_snr.py --configs full_e2 freeze10_e2 [--batches 16] [--work /tmp/mgral_snr]
Configurations are NAME = {full|freezeF}_e{EPOCHS}[_s{SEEDS}], e.g. freeze10_e5 or full_e2_s3
(each value the mean of SEEDS trainings; seedA uses seeds 0..S-1, seedB S..2S-1). Results are appended to
bench/results/lookup_snr.csv (re-runs reuse finished records).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from mgral_core.config import load_params
from mgral_core.cycle import infer_pool, train_cycle_detector
from mgral_core.inference_cache import load_inference
from mgral_core.lookup_table import random_batches
from mgral_core.pool import PoolState
from mgral_core.project import init_from_synthetic, load_project_info
from mgral_core.proxy_training import train_proxy_record
from mgral_core.synthetic import SyntheticSpec


def parse_config(name: str) -> tuple[int, int, int]:
    """(frozen layers, epochs, seeds averaged per value) from e.g. full_e2, freeze10_e4, full_e2_s3."""
    match = re.fullmatch(r"(full|freeze(\d+))_e(\d+)(?:_s(\d+))?", name)
    if not match:
        raise SystemExit(f"bad configuration name {name!r}; expected e.g. full_e2, freeze10_e4 or full_e2_s3")
    return (int(match.group(2)) if match.group(2) else 0), int(match.group(3)), int(match.group(4) or 1)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for config, group in frame.groupby("config"):
        wide = group.pivot(index="batch", columns="variant", values=["map50_95", "map50"]).dropna()
        for metric in ("map50_95", "map50"):
            a, b, t = wide[(metric, "seedA")], wide[(metric, "seedB")], wide[(metric, "true")]
            rows.append({"config": config, "metric": metric, "batches": len(wide),
                         "repeatability": spearmanr(a, b).statistic, "fidelity": spearmanr(a, t).statistic,
                         "between_batch_std": a.std(), "seed_noise_std": (a - b).std() / np.sqrt(2),
                         "mean": a.mean(), "true_label_mean": t.mean(),
                         "seconds_per_record": group["seconds"].mean()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["full_e2", "freeze10_e2"])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", default="/tmp/mgral_snr")
    parser.add_argument("--out", default="bench/results/lookup_snr.csv")
    args = parser.parse_args()
    params = load_params(args.params)
    work, out = Path(args.work), Path(args.out)
    project = work / "project"
    if not (project / "pool.csv").exists():
        d = params.dataset
        init_from_synthetic(project, SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool,
                                                   n_val=d.n_val, n_test=d.n_test),
                            params.simulation.initial_labeled, params.simulation.seed)
    base = train_cycle_detector(project, params, 1)
    inference = load_inference(infer_pool(project, base.weights, params.detector, 1))
    info = load_project_info(project)
    candidates = PoolState.load(project).unlabeled_pool_ids
    batches = random_batches(candidates, params.selection.budget, args.batches, seed=123)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["config", "batch", "variant"])
    print(f"base detector val mAP50-95 {base.val_map50_95:.4f}; {args.batches} batches of {len(batches[0])}",
          flush=True)
    for config in args.configs:
        freeze, epochs, n_seeds = parse_config(config)
        record_params = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(
            update={"freeze": freeze, "epochs": epochs})})
        for index, batch in enumerate(batches):
            variants = (("seedA", range(n_seeds), None), ("seedB", range(n_seeds, 2 * n_seeds), None),
                        ("true", range(n_seeds), info.oracle_dir))
            for variant, seeds, oracle in variants:
                if ((done["config"] == config) & (done["batch"] == index) & (done["variant"] == variant)).any():
                    continue
                start = time.time()
                results = [train_proxy_record(project, record_params, work / "records" / "current", base.weights,
                                              list(batch), inference, info.class_names, seed=seed,
                                              oracle_labels_dir=oracle) for seed in seeds]
                row = {"config": config, "batch": index, "variant": variant,
                       "map50_95": float(np.mean([r["value"] for r in results])),
                       "map50": float(np.mean([r["map50"] for r in results])), "seconds": round(time.time() - start, 1)}
                done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                done.to_csv(out, index=False)
                print(f"{config} batch {index:2d} {variant}: mAP50-95 {row['map50_95']:.4f} "
                      f"mAP50 {row['map50']:.4f} ({row['seconds']} s)", flush=True)
    summary = summarize(done[done["config"].isin(args.configs)])
    print(summary.round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
