"""Signal-to-noise of lookup-table records: do records differ by batch more than by training seed?

For one base detector (cycle 1 of the built-in project: trained on the initial labeled set) and
N random batches of k pool images, every batch's proxy record is computed four times:
pseudo-labels with seeds A, pseudo-labels with seeds B, and the oracle's true labels with seeds A
and B (a simulation-only diagnostic; selection never sees it). Printed per record metric:
  repeatability = Spearman(A, B) over the batches,
  fidelity      = Spearman(A, true) (fid_true_map: against the true-label record's mAP50-95),
  true_repeat   = Spearman(true, trueB): the repeatability of the true-label reference itself,
  between-batch std of A, seed noise = std(A - B) / sqrt(2), their ratio (snr), seconds per record.
With 16 batches a Spearman estimate has a standard error of about 0.25: compare configurations
on that scale, or raise --batches.

The configuration is given on the command line; every option defaults to HeadTuneConfig's default:
  python bench/lookup_snr.py --batches 32                 # the default record (docs/method.md)
  python bench/lookup_snr.py --seeds 1 --pseudo-conf 0.25 --pseudo-ignore 0 --constant-lr
  python bench/lookup_snr.py --full-finetune full_e2      # the Ultralytics-trainer proxy, for comparison
Rows are appended to bench/results/lookup_snr.csv (one per configuration, batch and variant);
a re-run reuses the finished rows of the same configuration.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import infer_pool, train_cycle_detector
from mgral_workspace.inference_cache import load_inference
from mgral_formats.yolo import read_yolo_label
from mgral_core.lookup_table import random_batches
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_from_synthetic, load_project_info
from mgral_workspace.record_values import build_head_proxy
from mgral_backends.ultralytics.proxy_training import (
    HeadTuneConfig,
    RecordScore,
    pseudo_targets,
    train_proxy_record,
)
from mgral_workspace.synthetic import SyntheticSpec

METRICS = ("map50_95", "map50", "neg_val_loss", "output_change")


def config_name(args: argparse.Namespace) -> str:
    if args.full_finetune:
        return args.full_finetune
    return (f"{args.trainable}_e{args.epochs}_lr{args.lr:g}_bs{args.batch_size}_wd{args.weight_decay:g}"
            f"_s{args.seeds}_v{args.val_images or 'all'}_k{args.budget}_c{args.pseudo_conf:g}"
            f"{f'_ig{args.pseudo_ignore:g}' if args.pseudo_ignore else ''}{'' if args.pseudo_box_loss else '_nobox'}"
            f"{'' if args.pseudo_classes == 'hard' else '_' + args.pseudo_classes}{'' if args.cosine else '_const'}")


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, metric): repeatability, fidelity, spreads, seconds per record."""
    frame = frame.assign(neg_val_loss=-frame["val_loss"]) if "val_loss" in frame else frame
    rows = []
    for config, group in frame.groupby("config", sort=False):
        for metric in METRICS:
            if metric not in group or group[metric].isna().all():
                continue
            wide = group.pivot(index="batch", columns="variant", values=metric)
            if not {"seedA", "seedB", "true"} <= set(wide.columns):
                continue
            wide = wide.dropna(subset=["seedA", "seedB", "true"])
            if len(wide) < 3:
                continue
            a, b, t = wide["seedA"], wide["seedB"], wide["true"]
            true_map = group[group["variant"] == "true"].set_index("batch").loc[wide.index, "map50_95"]
            noise = (a - b).std() / np.sqrt(2)
            rows.append({"config": config, "metric": metric, "batches": len(wide),
                         "repeatability": spearmanr(a, b).statistic, "fidelity": spearmanr(a, t).statistic,
                         "fid_true_map": spearmanr(a, true_map).statistic,
                         "true_repeat": spearmanr(t, wide["trueB"]).statistic if "trueB" in wide else np.nan,
                         "between_batch_std": a.std(), "seed_noise_std": noise,
                         "snr": a.std() / noise if noise > 0 else float("inf"),
                         "mean": a.mean(), "true_mean": t.mean(),
                         "s_per_record": group.loc[group["variant"] == "seedA", "seconds"].mean()})
    return pd.DataFrame(rows)


def parse_full(name: str) -> tuple[int, int, int]:
    """(frozen layers, epochs, seeds averaged) from e.g. full_e2, freeze10_e4, full_e2_s3."""
    match = re.fullmatch(r"(full|freeze(\d+))_e(\d+)(?:_s(\d+))?", name)
    if not match:
        raise SystemExit(f"bad --full-finetune {name!r}; expected e.g. full_e2, freeze10_e4 or full_e2_s3")
    return (int(match.group(2)) if match.group(2) else 0), int(match.group(3)), int(match.group(4) or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = HeadTuneConfig()  # every option defaults to the proxy's own default
    parser.add_argument("--trainable", choices=["head", "last"], default=default.trainable)
    parser.add_argument("--epochs", type=int, default=default.epochs)
    parser.add_argument("--lr", type=float, default=default.lr)
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--weight-decay", type=float, default=default.weight_decay)
    parser.add_argument("--constant-lr", dest="cosine", action="store_false", help="no cosine decay")
    parser.add_argument("--seeds", type=int, default=len(default.seeds), help="seeds averaged per record value")
    parser.add_argument("--val-images", type=int, default=0, help="score on the first N val images (0 = all)")
    parser.add_argument("--budget", type=int, default=0, help="batch size k (0 = selection.budget)")
    parser.add_argument("--pseudo-conf", type=float, default=default.pseudo_conf)
    parser.add_argument("--pseudo-ignore", type=float, default=default.pseudo_ignore,
                        help="ignore B's unassigned anchors with a teacher score >= this (0 = off)")
    parser.add_argument("--no-pseudo-box-loss", dest="pseudo_box_loss", action="store_false",
                        help="pseudo boxes train classification only")
    parser.add_argument("--pseudo-classes", choices=["hard", "soft", "agnostic"], default=default.pseudo_classes)
    parser.add_argument("--full-finetune", default="", help="instead: Ultralytics-trainer records, e.g. full_e2")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", default="/tmp/mgral_snr")
    parser.add_argument("--out", default="bench/results/lookup_snr.csv")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    args.budget = args.budget or params.selection.budget
    work, out, config = Path(args.work), Path(args.out), config_name(args)
    project = work / "project"
    if not (project / "pool.csv").exists():
        d = params.dataset
        init_from_synthetic(project, SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool,
                                                   n_val=d.n_val, n_test=d.n_test),
                            params.simulation.initial_labeled, params.simulation.seed)
    base = train_cycle_detector(project, params, 1)
    inference = load_inference(infer_pool(project, base.weights, params.detector, 1))
    info, pool = load_project_info(project), PoolState.load(project)
    candidates = pool.unlabeled_pool_ids
    batches = [b.tolist() for b in random_batches(candidates, args.budget, args.batches, seed=123)]
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["config", "batch", "variant"])
    table = pool.table.set_index("image_id")

    def oracle(ids: list[str]) -> dict:  # simulation-only: the hidden labels of B, for fidelity
        return {i: read_yolo_label(info.oracle_dir / f"{i}.txt", int(table.loc[i, "width"]),
                                   int(table.loc[i, "height"])) for i in ids}

    if args.full_finetune:
        freeze, epochs, n_seeds = parse_full(args.full_finetune)
        record_params = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(
            update={"freeze": freeze, "epochs": epochs, "pseudo_conf": args.pseudo_conf})})

        def compute(batch: list[str], seeds: range, true_labels: bool) -> dict:
            runs = [train_proxy_record(project, record_params, work / "records" / "current", base.weights, batch,
                                       inference, info.class_names, seed=seed,
                                       oracle_labels_dir=info.oracle_dir if true_labels else None) for seed in seeds]
            return {"map50_95": np.mean([r["value"] for r in runs]), "map50": np.mean([r["map50"] for r in runs])}
    else:
        n_seeds = args.seeds
        head_config = HeadTuneConfig(trainable=args.trainable, epochs=args.epochs, lr=args.lr,
                                     batch_size=args.batch_size, weight_decay=args.weight_decay, cosine=args.cosine,
                                     pseudo_ignore=args.pseudo_ignore, pseudo_box_loss=args.pseudo_box_loss,
                                     pseudo_classes=args.pseudo_classes, pseudo_conf=args.pseudo_conf)
        val_ids = pool.ids("val").tolist()[:args.val_images or None]
        start = time.time()
        proxy = build_head_proxy(project, base.weights, candidates.tolist(), imgsz=params.detector.imgsz,
                                 config=head_config, val_ids=val_ids, cache_path=work / "head_features_cycle1.pt")
        reference = proxy.base_score()
        print(f"head proxy ready in {time.time() - start:.1f} s; un-tuned head: val mAP50-95 "
              f"{reference.map50_95:.4f}, mAP50 {reference.map50:.4f}, loss {reference.val_loss:.4f} "
              f"on {len(val_ids)} val images", flush=True)
        detections = inference.detections_by_id()

        def compute(batch: list[str], seeds: range, true_labels: bool) -> dict:
            targets = oracle(batch) if true_labels else pseudo_targets(detections, batch, args.pseudo_conf)
            score = proxy.record(targets, seeds=list(seeds), pseudo=not true_labels)
            return {name: getattr(score, name) for name in RecordScore.__dataclass_fields__ if name not in ("seconds", "digest")}

    print(f"{config}: base detector val mAP50-95 (trainer) {base.val_map50_95:.4f}; "
          f"{args.batches} batches of {args.budget}; L = {len(pool.labeled_pool_ids)}", flush=True)
    variants = (("seedA", range(n_seeds), False), ("seedB", range(n_seeds, 2 * n_seeds), False),
                ("true", range(n_seeds), True), ("trueB", range(n_seeds, 2 * n_seeds), True))
    for index, batch in enumerate(batches):
        for variant, seeds, true_labels in variants:
            if ((done["config"] == config) & (done["batch"] == index) & (done["variant"] == variant)).any():
                continue
            start = time.time()
            row = {"config": config, "batch": index, "variant": variant, **compute(batch, seeds, true_labels),
                   "seconds": round(time.time() - start, 2)}
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            done.to_csv(out, index=False)
        print(f"batch {index:2d} done", flush=True)
    summary = summarize(done[done["config"] == config])
    print(summary.drop(columns="config").round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
