"""Lookup-table record values: a semi-supervised proxy detector trained on L ∪ pseudo(B).

Default proxy, `HeadProxy`: the cycle's detector runs once over L, the candidates and the
validation split, caching the feature maps that feed its Detect head. A record is a copy of that
head fine-tuned on the cached features of L (their labels) and B (pseudo-labels from the same
detector) with Ultralytics' own detection loss, then scored on the cached validation features.
Every record of a cycle uses the same seeds and data order (common random numbers), so the batch
is the only difference between records. The older warm-started full fine-tune through the
Ultralytics trainer (`train_proxy_record`) is kept as the slow, noisy comparison.
Nothing here reads the oracle's labels of B: records only see the targets they are given.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mgral_workspace.atomic import atomic_open
from mgral_workspace.config import Params
from mgral_core.agent.runtime import intra_op_threads
from mgral_core.detections import Detections
from mgral_backends.ultralytics.child import child_main, run_child
from mgral_backends.ultralytics.detector import (
    letterbox_batch,
    load_detection_model,
    train_detector,
    write_data_yaml,
)
from mgral_core.evaluation import evaluate_detections
from mgral_workspace.inference_cache import InferenceResult
from mgral_formats.yolo import format_yolo_label
from mgral_workspace.pool import PoolState

from ultralytics.cfg import get_cfg  # noqa: E402  (after ultralytics_env, via detector)
from ultralytics.nn.modules.head import Detect  # noqa: E402
from ultralytics.utils import nms, ops  # noqa: E402
from ultralytics.utils.loss import v8DetectionLoss  # noqa: E402
from ultralytics.utils.tal import dist2bbox, make_anchors  # noqa: E402

Targets = tuple[np.ndarray, np.ndarray]  # (boxes_xyxy (N, 4) original-image pixels, classes (N,))
Metric = Literal["map50_95", "map50", "neg_val_loss", "output_change"]


@dataclass(frozen=True)
class HeadFeatures:
    """Feature maps that feed a detector's Detect head, one row per image.

    Attributes:
        ids: (N,) image ids as str.
        levels: one (N, C_l, H_l, W_l) tensor per detection level (strides 8, 16, 32 for YOLOv8n).
        image_shapes: (N, 2) int64 original (height, width) of each image.
        imgsz: side of the square letterboxed input the features were computed at.
    """

    ids: np.ndarray
    levels: tuple[torch.Tensor, ...]
    image_shapes: np.ndarray
    imgsz: int

    def __post_init__(self) -> None:
        n = len(self.ids)
        if any(level.shape[0] != n for level in self.levels) or self.image_shapes.shape != (n, 2):
            raise ValueError(f"levels {[tuple(x.shape) for x in self.levels]} and image_shapes "
                             f"{self.image_shapes.shape} must all have {n} rows, one per id")

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids.tolist())}

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) row indices of `ids`; raises KeyError naming the first id without features."""
        index = self._row_of
        missing = next((i for i in ids if i not in index), None)
        if missing is not None:
            raise KeyError(f"no cached head features for image id {missing!r}")
        return np.array([index[i] for i in ids], dtype=np.int64)


@torch.no_grad()
def cache_head_features(model: torch.nn.Module, paths: Sequence[str | Path], ids: Sequence[str], *, imgsz: int,
                        batch: int = 64, dtype: torch.dtype = torch.float16,
                        progress: Callable[[int], None] | None = None) -> HeadFeatures:
    """Run `model` (a DetectionModel) once over `paths`, in eval mode; keep the inputs of its Detect head.

    Images are letterboxed exactly as `detector.predict_images` does. Features are stored in
    `dtype` (float16 halves memory; records compute in float32). Does not train anything.
    """
    if len(paths) != len(ids):
        raise ValueError(f"{len(paths)} paths for {len(ids)} ids")
    model.eval()
    device = next(model.parameters()).device
    stride = int(max(int(model.stride.max()), 32))
    captured: list[list[torch.Tensor]] = []
    hook = model.model[-1].register_forward_pre_hook(
        lambda _m, args: captured.append([x.detach().to("cpu", dtype) for x in args[0]]))
    shapes: list[tuple[int, int]] = []
    try:
        for start in range(0, len(paths), batch):
            x, chunk_shapes = letterbox_batch(paths[start:start + batch], imgsz, stride)  # (B, 3, S, S)
            model(x.to(device))
            shapes += chunk_shapes
            if progress is not None:
                progress(len(chunk_shapes))
    finally:
        hook.remove()
    levels = tuple(torch.cat([chunk[level] for chunk in captured]) for level in range(len(captured[0])))
    return HeadFeatures(np.asarray(ids, dtype=str), levels, np.asarray(shapes, dtype=np.int64).reshape(-1, 2), imgsz)


def save_head_features(path: str | Path, features: HeadFeatures) -> Path:
    """Write atomically; `load_head_features` reads it back with torch.load(weights_only=True)."""
    with atomic_open(path, "wb") as handle:
        torch.save({"ids": features.ids.tolist(), "levels": list(features.levels),
                    "image_shapes": torch.from_numpy(features.image_shapes), "imgsz": features.imgsz}, handle)
    return Path(path)


def load_head_features(path: str | Path) -> HeadFeatures:
    data = torch.load(Path(path), weights_only=True)
    return HeadFeatures(np.asarray(data["ids"], dtype=str), tuple(data["levels"]),
                        data["image_shapes"].numpy(), int(data["imgsz"]))


def pseudo_targets(detections: Mapping[str, Detections], batch_ids: Sequence[str], conf: float) -> dict[str, Targets]:
    """{id: (boxes_xyxy, classes)} of the current detector's detections with score >= conf, for B only."""
    out = {}
    for image_id in batch_ids:
        det = detections[image_id]
        keep = det.scores >= conf
        out[image_id] = (det.boxes_xyxy[keep], det.classes[keep])
    return out


def letterboxed_targets(boxes_xyxy: np.ndarray, classes: np.ndarray, image_shape: tuple[int, int],
                        imgsz: int) -> torch.Tensor:
    """(N, 5) float32 rows (class, cx, cy, w, h) normalized to the letterboxed imgsz x imgsz input.

    The forward map of `ultralytics.utils.ops.scale_boxes` (same rounding of size and padding).
    """
    h, w = image_shape
    gain = min(imgsz / h, imgsz / w)
    new_h, new_w = max(round(h * gain), 1), max(round(w * gain), 1)
    pad_x, pad_y = round((imgsz - new_w) / 2 - 0.1), round((imgsz - new_h) / 2 - 0.1)
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)  # (N, 4)
    x1, x2 = boxes[:, 0] * new_w / w + pad_x, boxes[:, 2] * new_w / w + pad_x
    y1, y2 = boxes[:, 1] * new_h / h + pad_y, boxes[:, 3] * new_h / h + pad_y
    rows = np.stack([np.asarray(classes, np.float64).reshape(-1), (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz,
                     (x2 - x1) / imgsz, (y2 - y1) / imgsz], axis=1)  # (N, 5)
    return torch.from_numpy(rows.astype(np.float32))


@dataclass(frozen=True)
class HeadTuneConfig:
    """How a record's head is fine-tuned and which score is its value.

    Defaults are the measured choice of bench/lookup_snr.py (docs/method.md, "Lookup-table records").

    Attributes:
        trainable: "head" = every layer of the Detect head; "last" = only its final 1x1
            prediction convolutions (the rest of the head is then cached too, so a record is cheap).
        epochs: passes over L ∪ B.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        cosine: decay the learning rate to zero over the run (a cosine), so the end point depends
            less on the order of the last minibatches; False keeps it constant.
        batch_size: images per optimizer step.
        seeds: data-order seeds of one record; its scores are the means over them. Every record
            of a cycle uses the same seeds (common random numbers).
        metric: the record value, higher is better: "map50_95", "map50", "neg_val_loss" (minus
            the detection loss on val) or "output_change" (mean |change| of val class probabilities).
        pseudo_conf: detections of the cycle's detector with at least this score become B's
            pseudo-labels (`record_from_detections`).
        pseudo_ignore: in B's images, anchors not assigned to a pseudo box whose class score under
            the cycle's detector is at least this are left out of the classification loss
            (possible missed objects are neither objects nor background); 0 = plain self-training.
        pseudo_box_loss: train box regression on pseudo boxes too (False: classification only).
        pseudo_classes: the class target of anchors assigned to a pseudo box: "hard" (its class,
            as for true labels), "soft" (the detector's class probabilities at the anchor,
            rescaled to the assigner's target strength) or "agnostic" (no class loss there).
        eval_conf, eval_iou, max_det: decoding of validation predictions, as `detector.predict_images`.
    """

    trainable: Literal["head", "last"] = "last"
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    cosine: bool = True
    batch_size: int = 32
    seeds: tuple[int, ...] = (0, 1)
    metric: Metric = "map50_95"
    pseudo_conf: float = 0.5
    pseudo_ignore: float = 0.05
    pseudo_box_loss: bool = True
    pseudo_classes: Literal["hard", "soft", "agnostic"] = "hard"
    eval_conf: float = 0.001
    eval_iou: float = 0.7
    max_det: int = 100

    def __post_init__(self) -> None:
        if self.trainable not in ("head", "last"):
            raise ValueError(f"trainable must be 'head' or 'last', got {self.trainable!r}")
        if self.metric not in ("map50_95", "map50", "neg_val_loss", "output_change"):
            raise ValueError(f"metric must be map50_95, map50, neg_val_loss or output_change, got {self.metric!r}")
        if self.pseudo_classes not in ("hard", "soft", "agnostic"):
            raise ValueError(f"pseudo_classes must be hard, soft or agnostic, got {self.pseudo_classes!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.seeds or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1, lr > 0 and seeds non-empty")
        if not 0 < self.pseudo_conf < 1 or not 0 <= self.pseudo_ignore < 1:
            raise ValueError(f"pseudo_conf must be in (0, 1) and pseudo_ignore in [0, 1), got "
                             f"{self.pseudo_conf} and {self.pseudo_ignore}")


@dataclass(frozen=True)
class RecordScore:
    """Scores of one proxy head on the validation split (means over seeds when averaged)."""

    map50_95: float
    map50: float
    val_loss: float
    output_change: float
    train_loss_first: float
    train_loss_last: float
    seconds: float
    digest: str = ""  # sha256 prefix of the fine-tuned parameters (of every seed, when averaged)

    def value(self, metric: Metric) -> float:
        """The record value under `metric`, oriented so that higher is better."""
        return -self.val_loss if metric == "neg_val_loss" else float(getattr(self, metric))

    @staticmethod
    def mean(scores: Sequence[RecordScore]) -> RecordScore:
        numeric = [f.name for f in fields(RecordScore) if f.name != "digest"]
        digest = hashlib.sha256("".join(s.digest for s in scores).encode()).hexdigest()[:16]
        return RecordScore(**{name: float(np.mean([getattr(s, name) for s in scores])) for name in numeric},
                           digest=digest)


def module_digest(module: torch.nn.Module) -> str:
    """sha256 prefix of a module's parameters and buffers: equal digests = bitwise-equal training."""
    sha = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def _collate(targets: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ultralytics' batch dict from per-image (n_i, 5) target rows: batch_idx (M,), cls (M, 1), bboxes (M, 4)."""
    rows = torch.cat(list(targets)) if targets else torch.zeros(0, 5)  # (M, 5)
    index = torch.cat([torch.full((len(t),), float(i)) for i, t in enumerate(targets)]) if targets else torch.zeros(0)
    return {"batch_idx": index, "cls": rows[:, :1], "bboxes": rows[:, 1:5]}


def _chunks(items: Sequence, size: int) -> list:
    return [items[i:i + size] for i in range(0, len(items), size)]


class HeadProxy:
    """The shared part of one cycle's records: the detector's head, cached features and the labels of L and val.

    Args:
        model: the cycle's DetectionModel; it is not modified (its head is copied per record).
        features: cached head inputs of at least L, the val images and every image a batch may hold.
        labeled: labels of L, {id: (boxes_xyxy, classes)} in original-image pixels.
        val: labels of the validation images the records are scored on.
        config: fine-tuning and scoring settings.

    A record never reads labels other than `labeled`, `val` and the batch targets it is given.
    It uses no global random state and each thread gets its own loss object, so one proxy can
    serve records from several threads and the same seed gives the same record in any of them.
    """

    def __init__(self, model: torch.nn.Module, features: HeadFeatures, labeled: Mapping[str, Targets],
                 val: Mapping[str, Targets], config: HeadTuneConfig):
        head = model.model[-1]
        if type(head) is not Detect or head.end2end:
            raise ValueError(f"HeadProxy supports a plain YOLO Detect head (v8/v11 style), got {type(head).__name__}")
        shim = copy.deepcopy(model).float().cpu()
        shim.args = get_cfg()  # the trainer's default loss gains (box 7.5, cls 0.5, dfl 1.5)
        self._shared_criterion = shim.init_criterion()
        if not isinstance(self._shared_criterion, v8DetectionLoss):
            raise ValueError(f"expected v8DetectionLoss for this head, got {type(self._shared_criterion).__name__}")
        self._local = threading.local()
        self._head = shim.model[-1].eval().requires_grad_(False)
        del shim
        self.config = config
        self.features = features
        self.labeled_ids = list(labeled)
        self.val_ids = list(val)
        self._labeled_targets = self._targets(labeled)
        self._val_rows = torch.from_numpy(features.rows(self.val_ids))
        self._val_targets = self._targets(val)
        self._val_truth = {i: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(c, np.int64).reshape(-1))
                           for i, (b, c) in val.items()}
        self._inputs = self._trainable_inputs(features.levels)
        base = self._trainable_copy().requires_grad_(False)
        with torch.no_grad():
            self._base_probs = torch.cat([self._predict(base, self._gather(rows))["scores"].sigmoid()
                                          for rows in self._val_rows.split(64)])  # (V, nc, A)

    @property
    def _criterion(self) -> v8DetectionLoss:
        """This thread's copy of the loss: Ultralytics' assigner keeps per-call state on itself."""
        criterion = getattr(self._local, "criterion", None)
        if criterion is None:
            criterion = copy.copy(self._shared_criterion)
            criterion.assigner = copy.deepcopy(self._shared_criterion.assigner)
            self._local.criterion = criterion
        return criterion

    def _targets(self, labels: Mapping[str, Targets]) -> list[torch.Tensor]:
        shapes = self.features.image_shapes[self.features.rows(list(labels))]  # (n, 2)
        return [letterboxed_targets(boxes, classes, tuple(shape), self.features.imgsz)
                for (boxes, classes), shape in zip(labels.values(), shapes)]

    @torch.no_grad()
    def _trainable_inputs(self, levels: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """What the trainable part reads: the neck maps ("head") or the head's penultimate maps ("last")."""
        if self.config.trainable == "head":
            return list(levels)
        head, dtype = self._head, levels[0].dtype
        box_in = [torch.cat([head.cv2[i][:-1](x.float()).to(dtype) for x in level.split(64)])
                  for i, level in enumerate(levels)]  # each (N, c2, H_i, W_i)
        cls_in = [torch.cat([head.cv3[i][:-1](x.float()).to(dtype) for x in level.split(64)])
                  for i, level in enumerate(levels)]  # each (N, c3, H_i, W_i)
        return box_in + cls_in

    def _trainable_copy(self) -> torch.nn.Module:
        head = self._head
        if self.config.trainable == "head":
            module = copy.deepcopy(head)
        else:
            module = torch.nn.ModuleList([copy.deepcopy(seq[-1]) for seq in (*head.cv2, *head.cv3)])
        return module.eval().requires_grad_(True)  # eval: BatchNorm keeps the detector's statistics

    def _gather(self, rows: torch.Tensor) -> list[torch.Tensor]:
        return [x[rows].float() for x in self._inputs]  # each (b, C, H, W)

    def _predict(self, module: torch.nn.Module, x: list[torch.Tensor]) -> dict:
        """Raw head outputs: boxes (b, 4 * reg_max, A), scores (b, nc, A) logits, feats (for anchors)."""
        head = self._head
        if self.config.trainable == "head":
            return module.forward_head(x, **module.one2many)
        nl, b = head.nl, x[0].shape[0]
        boxes = torch.cat([module[i](x[i]).view(b, 4 * head.reg_max, -1) for i in range(nl)], dim=-1)
        scores = torch.cat([module[nl + i](x[nl + i]).view(b, head.nc, -1) for i in range(nl)], dim=-1)
        return {"boxes": boxes, "scores": scores, "feats": x[:nl]}

    def _decode(self, preds: dict) -> torch.Tensor:
        """(b, 4 + nc, A): xywh boxes in letterboxed pixels and sigmoid class scores, as Detect._inference."""
        head = self._head
        anchors, strides = (a.transpose(0, 1) for a in make_anchors(preds["feats"], head.stride, 0.5))
        boxes = dist2bbox(head.dfl(preds["boxes"]), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat([boxes, preds["scores"].sigmoid()], 1)

    def detection_loss(self, preds: dict, batch: dict[str, torch.Tensor], pseudo: torch.Tensor,
                       teacher: torch.Tensor | None = None) -> torch.Tensor:
        """Ultralytics' v8 detection loss per image (box + cls + dfl, gains applied), with B's options.

        Composed of the criterion's own parts (preprocess, task-aligned assigner, BCE, BboxLoss) as
        in `v8DetectionLoss.get_assigned_targets_and_loss`; without options it equals that loss
        divided by the batch size. `pseudo` (b,) bool marks pseudo-labeled images; `teacher`
        (b, nc, A) holds the cycle detector's class scores (needed by config.pseudo_ignore > 0
        and pseudo_classes "soft").
        """
        crit, c = self._criterion, self.config
        pred_distri = preds["boxes"].permute(0, 2, 1).contiguous()  # (b, A, 4 * reg_max)
        pred_scores = preds["scores"].permute(0, 2, 1).contiguous()  # (b, A, nc)
        anchor_points, stride_tensor = make_anchors(preds["feats"], crit.stride, 0.5)  # (A, 2), (A, 1)
        b = pred_scores.shape[0]
        imgsz = torch.tensor(preds["feats"][0].shape[2:], dtype=pred_scores.dtype) * crit.stride[0]
        targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
        targets = crit.preprocess(targets, b, scale_tensor=imgsz[[1, 0, 1, 0]])  # (b, max_n, 5)
        gt_labels, gt_bboxes = targets.split((1, 4), 2)
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0.0)
        pred_bboxes = crit.bbox_decode(anchor_points, pred_distri)  # (b, A, 4) xyxy, grid units
        _, target_bboxes, target_scores, fg_mask, _ = crit.assigner(
            pred_scores.detach().sigmoid(), (pred_bboxes.detach() * stride_tensor).type(gt_bboxes.dtype),
            anchor_points * stride_tensor, gt_labels, gt_bboxes, mask_gt)  # fg_mask (b, A)
        target_scores_sum = target_scores.sum().clamp_(min=1)
        cls_weight = torch.ones_like(fg_mask, dtype=pred_scores.dtype)  # (b, A)
        pseudo_fg = pseudo[:, None] & fg_mask  # (b, A)
        if c.pseudo_ignore > 0 and pseudo.any():
            uncertain = pseudo[:, None] & ~fg_mask & (teacher.amax(1) >= c.pseudo_ignore)
            cls_weight = cls_weight.masked_fill(uncertain, 0.0)
        if c.pseudo_classes == "agnostic":
            cls_weight = cls_weight.masked_fill(pseudo_fg, 0.0)
        elif c.pseudo_classes == "soft" and pseudo.any():
            probs = teacher.permute(0, 2, 1)  # (b, A, nc)
            soft = probs / probs.sum(-1, keepdim=True).clamp(min=1e-9) * target_scores.sum(-1, keepdim=True)
            target_scores = torch.where(pseudo_fg[..., None], soft, target_scores)  # (b, A, nc)
        cls_loss = (crit.bce(pred_scores, target_scores.to(pred_scores.dtype)) * cls_weight[..., None]).sum()
        box_mask = fg_mask if c.pseudo_box_loss else fg_mask & ~pseudo[:, None]
        box_loss, dfl_loss = crit.bbox_loss(pred_distri, pred_bboxes, anchor_points, target_bboxes / stride_tensor,
                                            target_scores, target_scores_sum, box_mask, imgsz, stride_tensor)
        hyp = crit.hyp
        return box_loss * hyp.box + cls_loss / target_scores_sum * hyp.cls + dfl_loss * hyp.dfl

    def fine_tune(self, rows: torch.Tensor, targets: Sequence[torch.Tensor], pseudo: torch.Tensor, seed: int
                  ) -> tuple[torch.nn.Module, float, float]:
        """A copy of the trainable part fine-tuned on feature rows `rows` (n,); returns (module, first, last loss).

        `pseudo` (n,) bool marks the images whose targets are pseudo-labels (B). The data order
        depends on `seed` and n only: two records with the same seed and size visit their slots
        in the same order (common random numbers).
        """
        c = self.config
        module = self._trainable_copy()
        teacher = None
        if c.pseudo_ignore > 0 or c.pseudo_classes == "soft":
            base = self._trainable_copy().requires_grad_(False)
            with torch.no_grad():
                teacher = torch.cat([self._predict(base, self._gather(chunk))["scores"].sigmoid()
                                     for chunk in rows.split(64)])  # (n, nc, A)
        optimizer = torch.optim.AdamW(module.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        steps = c.epochs * -(-len(rows) // c.batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * step / steps)) if c.cosine else 1.0)
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(c.epochs):
            order = torch.randperm(len(rows), generator=generator)  # (n,)
            for slots in order.split(c.batch_size):
                loss = self.detection_loss(self._predict(module, self._gather(rows[slots])),
                                           _collate([targets[s] for s in slots.tolist()]), pseudo[slots],
                                           None if teacher is None else teacher[slots])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
        return module, losses[0], losses[-1]

    @torch.no_grad()
    def score(self, module: torch.nn.Module) -> dict[str, float]:
        """mAP50-95, mAP50 (`evaluation.evaluate_detections`), val loss and output change of `module` on val."""
        c, nc = self.config, self._head.nc
        predictions: dict[str, Detections] = {}
        loss_sum, change_sum = 0.0, 0.0
        size = (self.features.imgsz, self.features.imgsz)
        for rows, ids, targets, base in zip(self._val_rows.split(64), _chunks(self.val_ids, 64),
                                            _chunks(self._val_targets, 64), self._base_probs.split(64)):
            preds = self._predict(module, self._gather(rows))
            loss_sum += float(self._criterion(preds, _collate(targets))[0].sum())  # already x chunk size
            change_sum += float((preds["scores"].sigmoid() - base).abs().mean(dim=(1, 2)).sum())
            kept = nms.non_max_suppression(self._decode(preds), conf_thres=c.eval_conf, iou_thres=c.eval_iou,
                                           max_det=c.max_det, nc=nc)
            for image_id, kept_rows, shape in zip(ids, kept, self.features.image_shapes[rows.numpy()]):
                boxes = ops.scale_boxes(size, kept_rows[:, :4].clone(), tuple(int(s) for s in shape))
                predictions[image_id] = Detections(boxes.numpy().astype(np.float32),
                                                   kept_rows[:, 4].numpy().astype(np.float32),
                                                   kept_rows[:, 5].numpy().astype(np.int64))
        metrics = evaluate_detections(self._val_truth, predictions, nc)
        n = len(self.val_ids)
        return {"map50_95": metrics.map50_95, "map50": metrics.map50, "val_loss": loss_sum / n,
                "output_change": change_sum / n}

    def base_score(self) -> RecordScore:
        """Scores of the cycle's detector head itself (no fine-tuning): the reference of every record."""
        start = time.time()
        return RecordScore(**self.score(self._trainable_copy()), train_loss_first=float("nan"),
                           train_loss_last=float("nan"), seconds=time.time() - start)

    def record_from_detections(self, detections: Mapping[str, Detections], batch_ids: Sequence[str],
                               seeds: Sequence[int] | None = None) -> RecordScore:
        """The MGRAL record of batch B: pseudo-labels from the cycle's `detections` (score >= config.pseudo_conf)."""
        return self.record(pseudo_targets(detections, batch_ids, self.config.pseudo_conf), seeds)

    def record(self, batch: Mapping[str, Targets], seeds: Sequence[int] | None = None,
               pseudo: bool = True) -> RecordScore:
        """Fine-tune on L (its labels) ∪ B (`batch`: targets the caller chose, pseudo-labels in MGRAL); score it.

        Returns the mean over `seeds` (default config.seeds) of one fine-tune per seed.
        `pseudo=False` says the batch targets are true labels (the simulation-only fidelity
        reference): B is then trained like L, without the pseudo-label options.
        """
        overlap = set(batch) & set(self.labeled_ids)
        if overlap:
            raise ValueError(f"batch images already in L: {sorted(overlap)[:5]}")
        rows = torch.from_numpy(self.features.rows(self.labeled_ids + list(batch)))  # (|L| + |B|,)
        targets = self._labeled_targets + self._targets(batch)
        is_pseudo = (torch.arange(len(rows)) >= len(self.labeled_ids)) & pseudo  # (|L| + |B|,) True for B
        scores = []
        # one torch thread: the same weights in a thread pool, a Dask worker or a script (on an AMD EPYC
        # with AVX-512 the head's weights depended on the thread count; docs/RELIABILITY.md)
        with intra_op_threads(1):
            for seed in (self.config.seeds if seeds is None else seeds):
                start = time.time()
                module, first, last = self.fine_tune(rows, targets, is_pseudo, seed)
                if not np.isfinite(last):
                    raise FloatingPointError(f"head fine-tune diverged (loss {last}) with seed {seed} on "
                                             f"{len(batch)} batch images; lower lookup_table.head_lr")
                scores.append(RecordScore(**self.score(module), train_loss_first=first, train_loss_last=last,
                                          seconds=time.time() - start, digest=module_digest(module)))
        return RecordScore.mean(scores)


def pseudo_labels(inference: InferenceResult, batch_ids: Sequence[str], conf: float) -> dict[str, Targets]:
    """{id: (boxes_xyxy, classes)} of the current detector's detections with score >= conf."""
    return pseudo_targets(inference.detections_by_id(), batch_ids, conf)


def train_proxy_record(project_dir: str | Path, params: Params, record_dir: Path, weights: Path,
                       batch_ids: Sequence[str], inference: InferenceResult, class_names: Sequence[str],
                       seed: int | None = None, oracle_labels_dir: Path | None = None) -> dict:
    """The slow comparison proxy: fine-tune the whole detector on L ∪ pseudo(B) with the Ultralytics trainer.

    Returns {"value", "map50", "seconds", ...}. The record's images are symlinks and its labels
    are written under record_dir, so the project's own label folder (and the oracle) are
    untouched. Weights are deleted afterwards. `oracle_labels_dir` replaces the pseudo-labels of
    B by true ones: a simulation-only fidelity diagnostic (bench/lookup_snr.py), never used by selection.
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
    val_paths = [project / f for f in pool.files(pool.eval_ids("val"))]
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result, done = run_child("mgral_backends.ultralytics.proxy_training", request, record_dir.parent,
                             timeout=timeout, env=env, capture=True)
    if done.returncode != 0 or result is None:
        raise RuntimeError(f"proxy record {record_dir.name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return result


def _record(request: dict) -> dict:
    """The child's side of `train_proxy_record_isolated`."""
    from mgral_workspace.config import params_from_dict
    from mgral_workspace.inference_cache import load_inference
    from mgral_workspace.project import load_project_info

    torch.set_num_threads(1)
    project = request["project_dir"]
    return train_proxy_record(
        project, params_from_dict(request["params"]), Path(request["record_dir"]), Path(request["weights"]),
        request["batch_ids"], load_inference(request["inference_path"]), load_project_info(project).class_names,
        seed=request["seed"],
        oracle_labels_dir=Path(request["oracle_labels_dir"]) if request["oracle_labels_dir"] else None)


if __name__ == "__main__":
    child_main(_record)
