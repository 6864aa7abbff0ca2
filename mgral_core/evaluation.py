"""COCO-style detection metrics (mAP50-95, mAP50, per-class AP) in numpy, matching pycocotools' COCOeval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mgral_core.detections import Detections

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # (T,) as COCOeval's iouThrs
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # (R,) as COCOeval's recThrs


@dataclass(frozen=True)
class DetectionMetrics:
    """COCO box metrics over one set of images (area range "all", no crowd).

    Attributes:
        map50_95: AP averaged over IoU 0.50:0.05:0.95 and over classes present in the ground truth.
        map50: AP at IoU 0.50, averaged over the same classes.
        per_class_map50_95: (C,) AP50-95 per class; NaN for a class absent from the ground truth.
        per_class_map50: (C,) AP50 per class; NaN likewise.
        images: number of ground-truth images evaluated.
    """

    map50_95: float
    map50: float
    per_class_map50_95: np.ndarray
    per_class_map50: np.ndarray
    images: int


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a (N, 4) and b (M, 4), returned as (N, M).

    Areas are (x2 - x1) * (y2 - y1) without the legacy "+1" pixel convention, as pycocotools'
    bbox IoU computes them; boxes without positive overlap have IoU 0 (also zero-area boxes).
    """
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy  # (N, M)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (N,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)


def _greedy_match(dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(T, D) bool: detection d matched a ground truth at IoU threshold t, as COCOeval.evaluateImg.

    `dt_boxes` (D, 4) must already be in descending score order and `gt_boxes` (G, 4) hold one
    image's ground truth of one class. Each detection in turn takes the still-unmatched ground
    truth of highest IoU >= t (of equal IoUs, the later one, as COCOeval's loop does).
    """
    matched = np.zeros((len(IOU_THRESHOLDS), len(dt_boxes)), bool)
    if len(gt_boxes) == 0 or len(dt_boxes) == 0:
        return matched
    ious = box_iou(dt_boxes, gt_boxes)  # (D, G)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]  # (T, 1)
    taken = np.zeros((len(IOU_THRESHOLDS), len(gt_boxes)), bool)  # (T, G)
    rows = np.arange(len(IOU_THRESHOLDS))
    for d in range(len(dt_boxes)):
        candidate = np.where(~taken & (ious[d][None, :] >= thresholds), ious[d][None, :], -1.0)  # (T, G)
        last_best = candidate.shape[1] - 1 - np.argmax(candidate[:, ::-1], axis=1)  # (T,)
        hit = candidate[rows, last_best] >= 0
        taken[rows[hit], last_best[hit]] = True
        matched[hit, d] = True
    return matched


def _average_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> np.ndarray:
    """(T,) 101-point interpolated AP from all detections of one class: scores (D,), matched (T, D).

    Detections are ranked by score with a stable sort, so equal scores keep their image order,
    as in COCOeval.accumulate.
    """
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)  # (T, D)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)  # (T, D)
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone envelope
    ap = np.zeros(len(IOU_THRESHOLDS))
    for t in range(len(IOU_THRESHOLDS)):
        index = np.searchsorted(recall[t], RECALL_POINTS, side="left")  # (R,)
        reached = index < len(order)
        ap[t] = np.where(reached, precision[t, np.minimum(index, len(order) - 1)], 0.0).mean()
    return ap


def evaluate_detections(ground_truth: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        predictions: Mapping[str, Detections], num_classes: int,
                        max_dets: int = 100) -> DetectionMetrics:
    """COCO bbox AP of `predictions` against `ground_truth` = {image id: (boxes_xyxy (N, 4), classes (N,))}.

    Follows COCOeval with area range "all" and no crowd annotations: IoU thresholds
    0.50:0.05:0.95, greedy matching in score order per image and class, 101-point interpolated
    precision, and at most `max_dets` detections per image *and class* (pycocotools truncates per
    (image, category) pair when categories are used; it is not a cap over all classes together).
    A class without ground truth gets AP NaN and is left out of the means.

    It does not evaluate images missing from `ground_truth` (their predictions are ignored, where
    pycocotools would refuse them); an image missing from `predictions` has no detections.
    Equal scores across images are ranked in `ground_truth`'s iteration order (COCOeval uses
    its sorted image ids), the only way the two can differ, and only by such ties.

    Raises:
        ValueError: a class index outside [0, num_classes) or boxes and classes of unequal length.
    """
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    matches: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, np.int64)  # (C,)
    for image_id, (gt_boxes, gt_classes) in ground_truth.items():
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)  # (G, 4)
        gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)  # (G,)
        if len(gt_boxes) != len(gt_classes):
            raise ValueError(f"image {image_id!r}: {len(gt_boxes)} ground-truth boxes but {len(gt_classes)} classes")
        _check_classes(gt_classes, num_classes, f"ground truth of image {image_id!r}")
        n_gt += np.bincount(gt_classes, minlength=num_classes)
        det = predictions.get(image_id)
        if det is None or len(det) == 0:
            continue
        _check_classes(det.classes, num_classes, f"predictions of image {image_id!r}")
        dt_boxes = det.boxes_xyxy.astype(np.float64)  # (D, 4)
        for cls in np.unique(det.classes):
            mine = np.flatnonzero(det.classes == cls)
            mine = mine[np.argsort(-det.scores[mine], kind="mergesort")][:max_dets]
            scores[cls].append(det.scores[mine].astype(np.float64))
            matches[cls].append(_greedy_match(dt_boxes[mine], gt_boxes[gt_classes == cls]))

    per_class_ap = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)  # (C, T)
    for cls in np.flatnonzero(n_gt):
        if scores[cls]:
            per_class_ap[cls] = _average_precision(np.concatenate(scores[cls]),
                                                   np.concatenate(matches[cls], axis=1), int(n_gt[cls]))
        else:
            per_class_ap[cls] = 0.0
    present = n_gt > 0
    map50_95 = float(per_class_ap[present].mean()) if present.any() else float("nan")
    map50 = float(per_class_ap[present, 0].mean()) if present.any() else float("nan")
    return DetectionMetrics(map50_95, map50, per_class_ap.mean(axis=1), per_class_ap[:, 0].copy(), len(ground_truth))


def _check_classes(classes: np.ndarray, num_classes: int, where: str) -> None:
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"{where}: class indices must lie in [0, {num_classes}), got {classes.min()}..{classes.max()}")
