"""The steps of one active-learning cycle as plain functions over a project directory.

Each step writes its output under `cycles/cycle_NNN/` and, when that output already exists,
returns it instead of recomputing: a cycle interrupted at any point resumes where it stopped.
Nothing here knows about Prefect or MLflow; `tasks/` wraps these calls.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mgral_core.seeding import repeat_seed, seed_for
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import DetectorParams, Params
from mgral_backends import DetectorBackend, ServingModel, TrainedDetector, get_backend
from mgral_core.evaluation import evaluate_detections
from mgral_workspace.batch_export import export_batch
from mgral_workspace.inference_cache import InferenceResult, load_inference, save_inference
from mgral_formats.yolo import read_yolo_label
from mgral_workspace.pool import PoolState, PoolStateError
from mgral_workspace.project import load_project_info
from mgral_workspace.visualize import render_grid

if TYPE_CHECKING:  # mgral_core.strategies imports torch, SciPy and POT: not at every `mgral status`
    from mgral_core.strategies.base import PoolView


def cycle_dir(project_dir: str | Path, cycle: int) -> Path:
    return Path(project_dir) / "cycles" / f"cycle_{cycle:03d}"


@dataclass(frozen=True)
class EvalSummary:
    """mAP of one detector on one split, with per-class AP50-95 (NaN where a class is absent)."""

    split: str
    map50_95: float
    map50: float
    per_class: dict[str, float]
    images: int


def train_cycle_detector(project_dir: str | Path, params: Params, cycle: int,
                         log: Callable[[str], None] = print,
                         backend: DetectorBackend | None = None) -> TrainedDetector:
    """Train the cycle's detector on every labeled pool image; validate on the val split.

    Warm-starts from the previous cycle's weights when `detector.warm_start` is set and they
    exist (then `finetune_epochs`), else trains `epochs` from the model yaml or the user's .pt.
    Reuses a finished training of the same cycle. `backend` defaults to `get_backend(params.detector)`.
    """
    pool = PoolState.load(project_dir)
    out = cycle_dir(project_dir, cycle) / "detector"
    return _train_detector(project_dir, params, cycle, pool.labeled_pool_ids, out, training_seed(params, cycle, 0),
                           log, backend)


def training_seed(params: Params, cycle: int, repeat: int) -> int:
    """The training seed of `cycle`'s detector: repeat 0 is the cycle's own training, repeat r >= 1 its r-th
    repeat (`train_repeat_detector`); a counterfactual training takes the one it is compared with."""
    if repeat == 0:
        return seed_for(params.detector.seed, cycle, "detector")
    return repeat_seed(params.detector.seed, cycle, repeat)


def train_repeat_detector(project_dir: str | Path, params: Params, cycle: int, repeat: int,
                          log: Callable[[str], None] = print,
                          backend: DetectorBackend | None = None) -> TrainedDetector:
    """The cycle's training again with another training seed (repeat 1, 2, ...; repeat 0 is the cycle's own).

    Same images (those labeled before the cycle began, even after the cycle's batch was labeled),
    same start (the previous cycle's weights), same epochs; only the seed of Ultralytics' shuffling
    and augmentation differs. Written to `cycles/cycle_NNN/repeats/repeat_R/`; the campaign goes on
    from the cycle's own detector, never from a repeat. Reuses a finished repeat.
    """
    if repeat < 1:
        raise ValueError(f"repeat {repeat}: repeats are numbered from 1 (0 is the cycle's own training)")
    project = Path(project_dir)
    own = cycle_dir(project, cycle) / "detector" / "trained.json"
    if not own.exists():
        raise PoolStateError(f"{own}: cycle {cycle} has not trained its detector; a repeat repeats that training")
    train_ids = PoolState.load(project).labeled_pool_ids_before(cycle)
    expected = json.loads(own.read_text()).get("labeled")
    if expected is not None and expected != len(train_ids):
        raise PoolStateError(f"{project / 'pool.csv'}: cycle {cycle} trained on {expected} labeled images but the pool "
                             f"has {len(train_ids)} labeled before that cycle; cannot repeat its training")
    out = cycle_dir(project, cycle) / "repeats" / f"repeat_{repeat}"
    return _train_detector(project, params, cycle, train_ids, out, training_seed(params, cycle, repeat), log, backend)


def train_counterfactual_detector(project_dir: str | Path, params: Params, cycle: int, batch_ids: Sequence[str],
                                  out: Path, seed: int, log: Callable[[str], None] = print,
                                  backend: DetectorBackend | None = None) -> TrainedDetector:
    """Simulation only: cycle `cycle`'s training had `batch_ids` been the batch of cycle `cycle` - 1.

    It trains as `train_cycle_detector` does (the same start: cycle - 1's weights, the same epochs and
    val split, training seed `seed`) on the images labeled before cycle - 1 plus `batch_ids`, whose labels
    come from the oracle. Nothing in the project changes: the training sees the images through
    `out/view/` (links to the project's images, copies of their label files), so the pool, its labels and
    the campaign stay as they are. Reuses a finished training in `out`. Raises PoolStateError for a
    project labeled by people, a batch image that is already labeled or not in the pool, or one the
    oracle has no label for.
    """
    project = Path(project_dir)
    info = load_project_info(project)
    if not info.simulate:
        raise PoolStateError(f"{project}: not a simulation project; a counterfactual batch needs the oracle's labels")
    if cycle < 2:
        raise PoolStateError(f"cycle {cycle}: a counterfactual batch is one of an earlier cycle (cycle >= 2)")
    pool = PoolState.load(project)
    labeled = pool.labeled_pool_ids_before(cycle - 1)
    batch = [str(i) for i in batch_ids]
    pool_ids = set(pool.table.loc[pool.table["split"] == "pool", "image_id"])
    labeled_set = set(labeled)
    wrong = [i for i in batch if i in labeled_set or i not in pool_ids]
    if wrong:
        raise PoolStateError(f"{project / 'pool.csv'}: {len(wrong)} of the batch's images are labeled before cycle "
                             f"{cycle - 1} or not pool images (first: {wrong[0]})")
    label_files = dict(zip(pool.table["image_id"], pool.table["label_file"]))
    sources = {i: project / label_files[i] for i in labeled} | {i: info.oracle_dir / f"{i}.txt" for i in batch}
    view = out / "view"
    images = []
    for image_id, file in zip([*labeled, *batch], pool.files([*labeled, *batch])):
        if not sources[image_id].exists():
            raise PoolStateError(f"no label file for {image_id} ({sources[image_id]})")
        link = view / file  # images/<name>: Ultralytics finds its label at labels/<stem>.txt beside it
        label = view / "labels" / Path(file).relative_to("images").with_suffix(".txt")
        link.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to((project / file).resolve())
        shutil.copyfile(sources[image_id], label)
        images.append(link)
    return _train_detector(project, params, cycle, np.array([*labeled, *batch]), out, seed, log, backend,
                           train_images=images)


def _train_detector(project_dir: str | Path, params: Params, cycle: int, train_ids: np.ndarray, out: Path, seed: int,
                    log: Callable[[str], None], backend: DetectorBackend | None,
                    train_images: list[Path] | None = None) -> TrainedDetector:
    """One detector training of `cycle` on `train_ids` into `out` (reused when `out/trained.json` exists);
    `train_images`: their image files when not the project's own (a counterfactual view)."""
    done = out / "trained.json"
    if done.exists():
        info = json.loads(done.read_text())
        return TrainedDetector(_stored_weights(out, info["weights"]), info["val_map50_95"], info["val_map50"],
                               info["epochs"])
    project = Path(project_dir)
    info = load_project_info(project)
    pool = PoolState.load(project)
    val_ids = pool.eval_ids("val")
    if len(train_ids) == 0:
        raise PoolStateError(f"{project / 'pool.csv'}: no labeled pool images to train on")
    previous = _previous_weights(project, cycle) if params.detector.warm_start else None
    epochs = params.detector.finetune_epochs if previous else params.detector.epochs
    log(f"cycle {cycle}: training detector on {len(train_ids)} labeled images for {epochs} epochs"
        + f" ({_training_start(params.detector, previous)})")
    backend = get_backend(params.detector) if backend is None else backend
    images = [project / f for f in pool.files(train_ids)] if train_images is None else train_images
    trained = backend.train(images, [project / f for f in pool.files(val_ids)],
                            info.class_names, out, epochs=epochs, init_weights=previous, seed=seed)
    weights = Path(trained.weights)
    stored = weights.relative_to(out) if weights.is_relative_to(out) else weights  # the project may move
    write_json_atomic(done, {**asdict(trained), "weights": str(stored), "labeled": len(train_ids)})
    return trained


def _stored_weights(out: Path, stored: str) -> Path:
    """The weights a finished training recorded: relative to its detector folder, or (older records, or weights
    outside the project) absolute; an absolute path that no longer exists but whose file is in `out` (a project
    copied or moved) is taken from `out`."""
    path = Path(stored)
    if not path.is_absolute():
        return out / path
    return out / path.name if not path.exists() and (out / path.name).exists() else path


def _training_start(detector: DetectorParams, previous: Path | None) -> str:
    """Where a detector training starts, as the cycle log says it."""
    if previous is not None:
        return f"warm start from {previous.parent.parent.name}"
    if str(detector.model).endswith(".pt"):
        return f"from {detector.model}"
    if detector.pretrained is not None:
        return f"from the pretrained start {detector.pretrained!r}, head new"
    return "from scratch"


def _previous_weights(project: Path, cycle: int) -> Path | None:
    for earlier in range(cycle - 1, -1, -1):
        weights = cycle_dir(project, earlier) / "detector" / "best.pt"
        if weights.exists():
            return weights
    return None


def ground_truth(project_dir: str | Path, pool: PoolState, ids: Sequence[str]) -> dict[str, tuple]:
    """Visible labels of `ids` as {id: (boxes_xyxy (N,4), classes (N,))}; never reads the oracle."""
    table = pool.table.set_index("image_id")
    truth = {}
    for image_id in ids:
        row = table.loc[image_id]
        if not row["label_file"]:
            raise PoolStateError(f"image {image_id} has no visible label file")
        truth[image_id] = read_yolo_label(Path(project_dir) / row["label_file"], int(row["width"]), int(row["height"]))
    return truth


def evaluate_split(project_dir: str | Path, weights: Path, params: Params, split: str,
                   progress: Callable[[int], None] | None = None,
                   backend: DetectorBackend | None = None) -> EvalSummary:
    """COCO-style mAP50-95 / mAP50 of `weights` on a labeled split (test for reporting).

    `backend` defaults to `get_backend(params.detector)`.
    """
    project = Path(project_dir)
    info = load_project_info(project)
    pool = PoolState.load(project)
    ids = pool.eval_ids(split)
    backend = get_backend(params.detector) if backend is None else backend
    detections, _ = backend.predict(weights, [project / f for f in pool.files(ids)], want_embeddings=False,
                                    progress=progress)
    metrics = evaluate_detections(ground_truth(project, pool, ids), dict(zip(ids.tolist(), detections)),
                                  len(info.class_names))
    per_class = {name: float(ap) for name, ap in zip(info.class_names, metrics.per_class_map50_95)}
    return EvalSummary(split, float(metrics.map50_95), float(metrics.map50), per_class, len(ids))


def infer_pool(project_dir: str | Path, weights: Path, detector: DetectorParams, cycle: int,
               progress: Callable[[int], None] | None = None, backend: DetectorBackend | None = None) -> Path:
    """Detections and embeddings of every pool image (labeled and not) under this cycle's model.

    Cached per cycle (the cycle's model is fixed): each image is embedded once per cycle.
    `backend` defaults to `get_backend(detector)`.
    """
    path = cycle_dir(project_dir, cycle) / "pool_inference.npz"
    if path.exists():
        return path
    project = Path(project_dir)
    pool = PoolState.load(project)
    ids = pool.ids("pool")
    backend = get_backend(detector) if backend is None else backend
    detections, embeddings = backend.predict(weights, [project / f for f in pool.files(ids)], progress=progress)
    return save_inference(path, InferenceResult(ids, embeddings, detections))


def serving_model(project_dir: str | Path, params: Params, weights: Path, out_dir: Path,
                  backend: DetectorBackend | None = None) -> ServingModel:
    """The cycle's detector as a stand-alone predictor written into `out_dir`, with the project's class names
    (`DetectorBackend.serving_model`): what the model registry stores. `backend` defaults to
    `get_backend(params.detector)`."""
    backend = get_backend(params.detector) if backend is None else backend
    return backend.serving_model(weights, load_project_info(project_dir).class_names, Path(out_dir))


def pool_view(project_dir: str | Path, inference_path: Path) -> PoolView:
    """What a strategy may see: candidates (unlabeled, not pending) and labeled images, no labels."""
    from mgral_core.strategies.base import PoolView

    pool = PoolState.load(project_dir)
    info = load_project_info(project_dir)
    inference = load_inference(inference_path)
    unlabeled = inference.subset(pool.unlabeled_pool_ids)
    labeled = inference.subset(pool.labeled_pool_ids)
    return PoolView(
        unlabeled_ids=unlabeled.ids, unlabeled_embeddings=unlabeled.embeddings,
        labeled_ids=labeled.ids, labeled_embeddings=labeled.embeddings,
        detections=unlabeled.detections_by_id(), num_classes=len(info.class_names),
    )


def save_selection(project_dir: str | Path, cycle: int, ids: Sequence[str], strategy: str) -> Path:
    path = cycle_dir(project_dir, cycle) / "selection.json"
    write_json_atomic(path, {"cycle": cycle, "strategy": strategy, "ids": list(map(str, ids))})
    return path


def load_selection(project_dir: str | Path, cycle: int) -> list[str] | None:
    path = cycle_dir(project_dir, cycle) / "selection.json"
    return json.loads(path.read_text())["ids"] if path.exists() else None


def oracle_annotate(project_dir: str | Path, ids: Sequence[str], cycle: int) -> PoolState:
    """Simulation only: the oracle reveals the hidden labels of `ids` and the pool records them.

    Label files are copied first (idempotent), then the pool table is replaced atomically, so a
    crash in between leaves the previous pool state valid and a re-run completes the step.
    """
    project = Path(project_dir)
    info = load_project_info(project)
    if not info.simulate:
        raise PoolStateError(f"{project}: not a simulation project; labels come from annotators (mgral import)")
    pool = PoolState.load(project)
    already = set(pool.labeled_pool_ids)
    todo = [i for i in ids if i not in already]
    label_files = {}
    for image_id in todo:
        source = info.oracle_dir / f"{image_id}.txt"
        if not source.exists():
            raise PoolStateError(f"oracle has no label for {image_id} ({source})")
        target = info.labels_dir / f"{image_id}.txt"
        shutil.copyfile(source, target)
        label_files[image_id] = str(target.relative_to(project))
    if todo:
        unlabeled = set(pool.unlabeled_pool_ids)
        pool = pool.mark_selected([i for i in todo if i in unlabeled], cycle)
        pool = pool.mark_labeled(label_files, cycle)
        pool.save(project)
    return pool


def class_histogram(project_dir: str | Path, ids: Sequence[str]) -> dict[str, int]:
    """Instances per class among `ids` from their visible labels (after annotation)."""
    project = Path(project_dir)
    info = load_project_info(project)
    pool = PoolState.load(project)
    counts = np.zeros(len(info.class_names), dtype=np.int64)
    for _, classes in ground_truth(project, pool, ids).values():
        counts += np.bincount(classes, minlength=len(info.class_names))
    return dict(zip(info.class_names, counts.tolist()))


def selected_grid(project_dir: str | Path, cycle: int, ids: Sequence[str], max_images: int = 40) -> Path:
    """A grid of the first `max_images` selected images with their labels (once annotated), as
    cycles/cycle_NNN/selected_grid.png; captions are the image ids."""
    project = Path(project_dir)
    info, pool = load_project_info(project), PoolState.load(project)
    table = pool.table.set_index("image_id")
    shown = list(ids)[:max_images]
    truth = ground_truth(project, pool, shown)
    items = [(project / table.loc[i, "file"], *truth[i], i) for i in shown]
    return render_grid(items, info.class_names, cycle_dir(project, cycle) / "selected_grid.png", cols=10, tile=128)


def open_batch_progress(project_dir: str | Path) -> tuple[int, int, int]:
    """(cycle, labeled, handed out) of the most recent batch, val/test images that went out with it
    included; (0, 0, 0) when none is open."""
    return PoolState.load(project_dir).open_batch()


def training_gaps(pool: PoolState) -> list[str]:
    """What is missing before a detector can be trained, validated and tested; empty when nothing is."""
    return pool.training_gaps()


def labeling_wait(project_dir: str | Path, min_labeled_fraction: float) -> str | None:
    """Why a real-labeling cycle must wait for annotators, or None when it can go on.

    It waits while the open batch is less labeled than `min_labeled_fraction`, and while a detector
    cannot train yet (`training_gaps`) and images are still out for labeling. The message says what
    came back and what is still missing.
    """
    pool = PoolState.load(project_dir)
    batch_cycle, done, total = open_batch_progress(project_dir)
    gaps = training_gaps(pool)
    pending = pool.pending_ids()
    handed_out = set(pending)
    eval_out = [i for i in pool.eval_to_label_ids() if i in handed_out]
    detail = (f"; before a detector can train: {'; '.join(gaps)}" if gaps else "")
    if eval_out:
        detail += f"; {len(eval_out)} val/test images still to label (they measure the detector, never train it)"
    if total and done < min_labeled_fraction * total:
        needed = int(np.ceil(min_labeled_fraction * total))
        return (f"batch {batch_cycle}: {done}/{total} labeled; waiting for annotations (a cycle goes on at {needed}, "
                f"annotation.min_labeled_fraction {min_labeled_fraction}){detail}")
    if gaps and len(pending):
        return f"batch {batch_cycle}: {done}/{total} labeled; waiting for annotations{detail}"
    return None


def wait_ended_by(wait_before: str | None, wait_after: str | None) -> bool:
    """True when an import ended a cycle's wait: `labeling_wait` gave a reason before it and None after.

    This is the moment the next cycle can go on: the open batch reached the labeled fraction, or
    (cold start) the val/test images that went out with a batch already past it came back. An import
    that leaves the wait in place, or one after the wait had ended, is not: each wait ends once.
    """
    return wait_before is not None and wait_after is None


def hand_out_batch(project_dir: str | Path, ids: Sequence[str], cycle: int, inference_path: Path,
                   model_version: str, prelabel_conf: float) -> Path:
    """Real use: export the batch for annotators, then mark it selected (pending) in the pool."""
    info = load_project_info(project_dir)
    inference = load_inference(inference_path, ids)
    out = export_batch(project_dir, cycle, ids, inference.detections_by_id(), info.class_names, model_version,
                       prelabel_conf)
    PoolState.load(project_dir).mark_selected(ids, cycle).save(project_dir)
    return out


def save_evaluation(project_dir: str | Path, cycle: int, summary: EvalSummary, labeled: int) -> Path:
    path = cycle_dir(project_dir, cycle) / "evaluation.json"
    write_json_atomic(path, {**asdict(summary), "labeled": labeled, "cycle": cycle})
    return path
