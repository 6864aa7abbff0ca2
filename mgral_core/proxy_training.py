"""Lookup-table record values: a semi-supervised proxy detector trained on L ∪ pseudo(B).

Our stand-in for the paper's ISD-SSD / SED-SSOD: the cycle's detector pseudo-labels batch B
(detections above a confidence threshold), and a student warm-started from that detector is
fine-tuned on the true labels of L plus the pseudo-labels of B, then validated on the labeled
val split. Every record uses the same seed (common random numbers), so the batch is the main
difference between records. The oracle's labels of B are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgral_core.config import Params
from mgral_core.detector import load_detection_model, train_detector, write_data_yaml
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
    digest = weights_digest(trained.weights)
    shutil.rmtree(record_dir / "train", ignore_errors=True)
    shutil.rmtree(record_dir / "data", ignore_errors=True)
    return {"value": trained.val_map50_95, "map50": trained.val_map50, "pseudo_boxes": n_pseudo,
            "weights_digest": digest, "seconds": round(time.time() - start, 2)}


def weights_digest(weights: Path) -> str:
    """sha256 of the trained parameters (not of the file, whose metadata carries a date)."""
    model = load_detection_model(weights)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_proxy_record_isolated(project_dir: str | Path, params: Params, record_dir: Path, weights: Path,
                                batch_ids: Sequence[str], inference_path: Path, seed: int | None = None,
                                oracle_labels_dir: Path | None = None, timeout: float = 3600) -> dict:
    """`train_proxy_record` in a fresh Python process; same result, but bitwise reproducible anywhere.

    Ultralytics seeds and draws from process-global RNGs (`random`, numpy, torch). In a thread
    pool or a Dask worker other threads draw from them too, so in-process records are not
    reproducible there; a subprocess per record is (and frees its memory when it ends).
    """
    record_dir = Path(record_dir)
    record_dir.parent.mkdir(parents=True, exist_ok=True)
    request = {"project_dir": str(project_dir), "params": params.model_dump(mode="json"),
               "record_dir": str(record_dir), "weights": str(weights), "batch_ids": list(map(str, batch_ids)),
               "inference_path": str(inference_path), "seed": seed,
               "oracle_labels_dir": str(oracle_labels_dir) if oracle_labels_dir else None}
    request_file = record_dir.with_name(record_dir.name + ".request.json")
    result_file = record_dir.with_name(record_dir.name + ".result.json")
    request_file.write_text(json.dumps(request))
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mgral_core.proxy_training", str(request_file), str(result_file)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    request_file.unlink(missing_ok=True)
    if done.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"proxy record {record_dir.name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return result


def _main(request_file: str, result_file: str) -> None:
    import torch

    from mgral_core.config import params_from_dict
    from mgral_core.inference_cache import load_inference
    from mgral_core.project import load_project_info

    torch.set_num_threads(1)
    request = json.loads(Path(request_file).read_text())
    project = request["project_dir"]
    result = train_proxy_record(
        project, params_from_dict(request["params"]), Path(request["record_dir"]), Path(request["weights"]),
        request["batch_ids"], load_inference(request["inference_path"]), load_project_info(project).class_names,
        seed=request["seed"],
        oracle_labels_dir=Path(request["oracle_labels_dir"]) if request["oracle_labels_dir"] else None)
    Path(result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
