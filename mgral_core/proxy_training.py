"""Lookup-table record values: a semi-supervised proxy detector trained on L ∪ pseudo(B).

Our stand-in for the paper's ISD-SSD / SED-SSOD: the cycle's detector pseudo-labels batch B
(detections above a confidence threshold), and a student warm-started from that detector is
fine-tuned on the true labels of L plus the pseudo-labels of B, then validated on the labeled
val split. Every record uses the same seed (common random numbers), so the batch is the main
difference between records. The oracle's labels of B are never read.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgral_core.config import Params
from mgral_core.detector import train_detector, write_data_yaml
from mgral_core.inference_cache import InferenceResult
from mgral_core.labels import format_yolo_label
from mgral_core.pool import PoolState


def pseudo_labels(inference: InferenceResult, batch_ids: Sequence[str], conf: float
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{id: (boxes_xyxy, classes)} of the current detector's detections with score >= conf."""
    by_id = inference.detections_by_id()
    out = {}
    for image_id in batch_ids:
        det = by_id[image_id]
        keep = det.scores >= conf
        out[image_id] = (det.boxes_xyxy[keep], det.classes[keep])
    return out


def train_proxy_record(project_dir: str | Path, params: Params, record_dir: Path, weights: Path,
                       batch_ids: Sequence[str], inference: InferenceResult, class_names: Sequence[str],
                       seed: int | None = None, oracle_labels_dir: Path | None = None) -> dict:
    """Fine-tune the cycle's detector on L ∪ pseudo(B); returns {"value", "map50", "seconds", ...}.

    The record's images are symlinks and its labels are written under record_dir, so the
    project's own label folder (and the oracle) are untouched. Weights are deleted afterwards.
    `oracle_labels_dir` replaces the pseudo-labels of B by true ones: a simulation-only fidelity
    diagnostic (bench/lookup_snr.py), never used by selection.
    """
    start = time.time()
    project = Path(project_dir)
    pool = PoolState.load(project)
    table = pool.table.set_index("image_id")
    images, labels = record_dir / "data" / "images", record_dir / "data" / "labels"
    if record_dir.exists():
        shutil.rmtree(record_dir)
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    train_paths = []
    for image_id in pool.labeled_pool_ids:
        source = project / table.loc[image_id, "file"]
        link = images / source.name
        os.symlink(source.resolve(), link)
        shutil.copyfile(project / table.loc[image_id, "label_file"], labels / f"{source.stem}.txt")
        train_paths.append(link)
    n_pseudo = 0
    for image_id, (boxes, classes) in pseudo_labels(inference, batch_ids, params.lookup_table.pseudo_conf).items():
        source = project / table.loc[image_id, "file"]
        link = images / source.name
        os.symlink(source.resolve(), link)
        row = table.loc[image_id]
        target = labels / f"{source.stem}.txt"
        if oracle_labels_dir is not None:
            shutil.copyfile(oracle_labels_dir / f"{image_id}.txt", target)
        else:
            target.write_text(format_yolo_label(boxes, classes, row["width"], row["height"]))
        train_paths.append(link)
        n_pseudo += len(classes)
    val_paths = [project / f for f in pool.files(pool.ids("val"))]
    data_yaml = write_data_yaml(record_dir / "data.yaml", train_paths, val_paths, class_names)
    trained = train_detector(data_yaml, record_dir / "train", params.detector, epochs=params.lookup_table.epochs,
                             init_weights=weights, seed=params.lookup_table.seed if seed is None else seed,
                             freeze=params.lookup_table.freeze or None)
    shutil.rmtree(record_dir / "train", ignore_errors=True)
    shutil.rmtree(record_dir / "data", ignore_errors=True)
    return {"value": trained.val_map50_95, "map50": trained.val_map50, "pseudo_boxes": n_pseudo,
            "seconds": round(time.time() - start, 2)}
