"""Ultralytics YOLO adapter: train, and one batched inference pass giving detections and embeddings.

Ultralytics objects never leave this module: results are converted to `Detections` and numpy
arrays here, once. Everything runs on the CPU by default and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from mgral_workspace.config import DetectorParams
from mgral_core.detections import Detections
from mgral_backends.protocol import DetectorError, TrainedDetector, TrainingDiverged
from mgral_backends.ultralytics.env import YOLO
from mgral_backends.ultralytics.pretrained import load_pretrained, resolve_pretrained
from mgral_backends.ultralytics.trainer import detection_trainer, keep_training_threads, training_threads

from ultralytics.data.augment import LetterBox  # noqa: E402  (after ultralytics_env)
from ultralytics.utils import nms, ops  # noqa: E402

log = logging.getLogger(__name__)


def _stop_on_divergence(model, run_dir: Path) -> None:
    """Raise TrainingDiverged at the first non-finite batch loss or validation fitness.

    Ultralytics carries on past a NaN in the first epoch and later rewinds to last.pt, whose
    weights it has already NaN-zeroed (`save_model` applies nan_to_num), so its own recovery can
    silently end with garbage weights. One NaN batch poisons the weights through the optimizer,
    so the first one is enough to stop.
    """

    def check_loss(trainer) -> None:
        loss = trainer.loss
        if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            raise TrainingDiverged(run_dir, trainer.epoch + 1, trainer.epochs, f"training loss {loss.item()}")

    def check_fitness(trainer) -> None:
        if trainer.fitness is not None and not np.isfinite(trainer.fitness):
            raise TrainingDiverged(run_dir, trainer.epoch + 1, trainer.epochs,
                                   f"validation fitness {trainer.fitness}")

    model.add_callback("on_train_batch_end", check_loss)
    model.add_callback("on_fit_epoch_end", check_fitness)


def write_data_yaml(path: Path, train_images: Sequence[str | Path], val_images: Sequence[str | Path],
                    class_names: Sequence[str]) -> Path:
    """Write an Ultralytics data.yaml whose train/val entries are list files of absolute image paths.

    Labels are found by Ultralytics' own rule (the last /images/ replaced by /labels/, .txt).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    train_list = path.with_name(path.stem + "_train.txt")
    val_list = path.with_name(path.stem + "_val.txt")
    train_list.write_text("".join(f"{Path(p).absolute()}\n" for p in train_images))  # keep symlinks: labels sit beside them
    val_list.write_text("".join(f"{Path(p).absolute()}\n" for p in val_images))
    data = {
        "path": str(path.parent.resolve()),
        "train": str(train_list.resolve()),
        "val": str(val_list.resolve()),
        "names": {i: name for i, name in enumerate(class_names)},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _resolve_model(params: DetectorParams, init_weights: Path | None) -> str:
    if init_weights is not None:
        if not Path(init_weights).exists():
            raise DetectorError(f"{init_weights}: warm-start weights not found")
        return str(init_weights)
    model = params.model
    if model.endswith(".pt") and not Path(model).exists():
        raise DetectorError(
            f"detector.model: {model} does not exist; MGRAL never downloads weights. "
            "Use a model yaml such as yolov8n.yaml (trained from scratch) or a path to your own .pt"
        )
    return model


def _start_model(params: DetectorParams, init_weights: Path | None) -> YOLO:
    """The YOLO to train: warm-start weights, the user's .pt, the yaml with a pretrained start, or the bare yaml."""
    model = _resolve_model(params, init_weights)
    yolo = YOLO(model)
    if init_weights is None and not model.endswith(".pt"):
        pretrained = resolve_pretrained(params.pretrained)
        if pretrained is not None:
            load_pretrained(yolo, model, pretrained)
    return yolo


def train_detector(data_yaml: Path, out_dir: Path, params: DetectorParams, *, epochs: int,
                   init_weights: Path | None = None, seed: int | None = None,
                   freeze: int | None = None) -> TrainedDetector:
    """Train (or warm-start fine-tune) a YOLO detector; return its best weights copied to out_dir/best.pt.

    Raises TrainingDiverged (a DetectorError) as soon as the loss is NaN or infinite; then no
    best.pt is left in out_dir and the run's weights are deleted. Does not evaluate on the test
    split; see `predict_images` plus `evaluation` for that.
    """
    out_dir = Path(out_dir).resolve()  # Ultralytics puts relative project dirs under its own runs_dir
    run_dir = out_dir / "ultralytics"
    final = out_dir / "best.pt"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    if init_weights is None or Path(init_weights).resolve() != final:
        final.unlink(missing_ok=True)  # a failed run must not leave an older best.pt looking like its result
    model = _start_model(params, init_weights)
    _stop_on_divergence(model, run_dir)
    threads = training_threads(params)
    keep_training_threads(model, threads)
    threads_before = torch.get_num_threads()  # with detector.threads set, put back after the training
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            results = model.train(
                trainer=detection_trainer(params), data=str(data_yaml), epochs=epochs, imgsz=params.imgsz,
                batch=params.batch, optimizer=params.optimizer, lr0=params.lr0, device=params.device,
                workers=params.workers,
                cache="ram" if params.cache else False, seed=params.seed if seed is None else seed,
                deterministic=True, plots=False, amp=False, verbose=False, exist_ok=True,
                val=params.val_each_epoch, warmup_epochs=0.0 if init_weights is not None else 3.0,
                project=str(out_dir), name="ultralytics", patience=max(epochs, 50), freeze=freeze,
            )
    except TrainingDiverged:
        shutil.rmtree(run_dir / "weights", ignore_errors=True)
        raise
    except RuntimeError as err:  # Ultralytics' own NaN recovery giving up ("NaN persisted", "NaN/Inf")
        if "NaN" not in str(err):
            raise
        shutil.rmtree(run_dir / "weights", ignore_errors=True)
        epoch = getattr(getattr(model, "trainer", None), "epoch", epochs - 1) + 1
        raise TrainingDiverged(run_dir, epoch, epochs, str(err)) from err
    finally:
        if threads is not None:
            torch.set_num_threads(threads_before)
    best = run_dir / "weights" / "best.pt"
    if not best.exists():
        best = run_dir / "weights" / "last.pt"
    if not best.exists():
        raise DetectorError(f"training in {run_dir} produced no weights")
    box = getattr(results, "box", None)
    val_map = float(box.map) if box is not None else float("nan")
    val_map50 = float(box.map50) if box is not None else float("nan")
    if not np.isfinite(val_map):
        shutil.rmtree(run_dir / "weights", ignore_errors=True)
        raise TrainingDiverged(run_dir, epochs, epochs, f"final validation mAP50-95 {val_map}")
    shutil.copy2(best, final)
    shutil.rmtree(run_dir / "weights", ignore_errors=True)
    return TrainedDetector(final, val_map, val_map50, epochs)


def load_detection_model(weights: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The underlying DetectionModel of a YOLO checkpoint or yaml, in eval mode on `device`."""
    model = YOLO(str(weights)).model
    return model.to(device).float().eval()


def read_bgr(image: str | Path | np.ndarray) -> np.ndarray:
    """An image as Ultralytics reads it, (H, W, 3) BGR uint8: from a file, or from an (H, W, 3) uint8 RGB array
    (the order PIL, imageio and matplotlib use). Raises DetectorError for anything else, naming it."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DetectorError(f"an image array must be (H, W, 3) uint8 RGB, got shape {image.shape} "
                                f"dtype {image.dtype}")
        return np.ascontiguousarray(image[..., ::-1])
    bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)  # (H, W, 3) BGR uint8
    if bgr is None:
        raise DetectorError(f"{image}: cannot be read as an image")
    return bgr


def letterbox_batch(images: Sequence[str | Path | np.ndarray], imgsz: int,
                    stride: int) -> tuple[torch.Tensor, list]:
    """Read images (paths or RGB arrays, `read_bgr`), letterbox to imgsz; returns (B, 3, S, S) float tensor in
    [0, 1] and original shapes."""
    letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=stride)
    tensors, shapes = [], []
    for item in images:
        image = read_bgr(item)
        shapes.append(image.shape[:2])
        boxed = letterbox(image=image)
        tensors.append(torch.from_numpy(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))))
    return torch.stack(tensors).float() / 255.0, shapes


def _embedding_layer(model: torch.nn.Module) -> int:
    return len(model.model) - 2  # second to last layer, as Ultralytics' own `embed` (256-d for yolov8n)


def predict_images(weights: str | Path, paths: Sequence[str | Path], *, imgsz: int, conf: float = 0.001,
                   iou: float = 0.7, max_det: int = 100, batch: int = 64, device: str = "cpu",
                   want_embeddings: bool = True,
                   progress: Callable[[int], None] | None = None) -> tuple[list[Detections], np.ndarray | None]:
    """Run the detector of `weights` once over `paths`: detections with class probabilities, and embeddings.

    Returns one Detections per path (boxes in original-image pixels) and, if asked, an (N, D)
    float32 array of image embeddings (global average pool of the second-to-last layer).
    Does not cache anything; callers decide where results live.
    """
    return detect_images(load_detection_model(weights, device), paths, imgsz=imgsz, conf=conf, iou=iou,
                         max_det=max_det, batch=batch, device=device, want_embeddings=want_embeddings,
                         progress=progress)


@torch.no_grad()
def detect_images(model: torch.nn.Module, images: Sequence[str | Path | np.ndarray], *, imgsz: int,
                  conf: float = 0.001, iou: float = 0.7, max_det: int = 100, batch: int = 64, device: str = "cpu",
                  want_embeddings: bool = True,
                  progress: Callable[[int], None] | None = None) -> tuple[list[Detections], np.ndarray | None]:
    """`predict_images` with a loaded DetectionModel (`load_detection_model`) and images given as paths or
    (H, W, 3) uint8 RGB arrays (`read_bgr`): the one inference path of the cycle and of the registered model."""
    nc = int(model.nc)
    stride = int(max(int(model.stride.max()), 32))
    pooled: list[torch.Tensor] = []
    hook = None
    if want_embeddings:
        layer = model.model[_embedding_layer(model)]
        hook = layer.register_forward_hook(
            lambda _m, _i, out: pooled.append(torch.nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))
        )
    detections: list[Detections] = []
    try:
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            x, shapes = letterbox_batch(chunk, imgsz, stride)  # (B, 3, S, S)
            out = model(x.to(device))
            pred = out[0] if isinstance(out, (tuple, list)) else out  # (B, 4 + nc, A), sigmoid scores
            with_probs = torch.cat([pred, pred[:, 4:4 + nc]], 1)  # class probs ride along as extra channels
            kept = nms.non_max_suppression(with_probs, conf_thres=conf, iou_thres=iou, max_det=max_det, nc=nc)
            for rows, shape in zip(kept, shapes):
                rows = rows.cpu()
                boxes = ops.scale_boxes(x.shape[2:], rows[:, :4].clone(), shape)
                detections.append(Detections(
                    boxes_xyxy=boxes.numpy().astype(np.float32),
                    scores=rows[:, 4].numpy().astype(np.float32),
                    classes=rows[:, 5].numpy().astype(np.int64),
                    class_probs=rows[:, 6:6 + nc].numpy().astype(np.float32),
                ))
            if progress is not None:
                progress(len(chunk))
    finally:
        if hook is not None:
            hook.remove()
    embeddings = torch.cat(pooled).numpy().astype(np.float32) if want_embeddings else None  # (N, D)
    return detections, embeddings
