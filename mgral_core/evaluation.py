"""COCO-style detection metrics (mAP50-95, mAP50, per-class AP) in numpy, matching pycocotools.

Follows COCOeval for bbox, area range "all", no crowd: IoU thresholds 0.50:0.05:0.95, greedy
matching in score order per image and class, at most `max_dets` per image and class, 101-point
interpolated precision; a class without ground truth has AP NaN and is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mgral_core.detections import Detections

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class DetectionMetrics:
    map50_95: float
    map50: float
    per_class_map50_95: np.ndarray  # (C,) NaN where the class has no ground truth
    per_class_map50: np.ndarray  # (C,)
    images: int


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes a (N, 4) and b (M, 4), areas without COCO's legacy +1."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(gt: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """(T, D) bool: detection d (in score order) matched a ground truth at IoU threshold t."""
    matched = np.zeros((len(IOU_THRESHOLDS), len(dt)), bool)
    if len(gt) == 0 or len(dt) == 0:
        return matched
    ious = box_iou(dt.astype(np.float64), gt.astype(np.float64))  # (D, G)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(gt), bool)
        for d in range(len(dt)):
            best, best_iou = -1, min(threshold, 1 - 1e-10)
            for g in range(len(gt)):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                matched[t, d] = True
    return matched


def _average_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> np.ndarray:
    """(T,) AP per IoU threshold from all detections of one class (scores (D,), matched (T, D))."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)  # (T, D)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    ap = np.zeros(len(IOU_THRESHOLDS))
    for t in range(len(IOU_THRESHOLDS)):
        recall = tp[t] / n_gt
        precision = tp[t] / np.maximum(tp[t] + fp[t], np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        index = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.zeros(len(RECALL_POINTS))
        valid = index < len(precision)
        q[valid] = precision[index[valid]]
        ap[t] = q.mean()
    return ap


def evaluate_detections(ground_truth: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        predictions: Mapping[str, Detections], num_classes: int,
                        max_dets: int = 100) -> DetectionMetrics:
    """COCO mAP over the images of `ground_truth` ({id: (boxes_xyxy (N,4), classes (N,))}).

    An image missing from `predictions` counts as having no detections; predictions for images
    without ground truth entries are ignored.
    """
    per_class_ap = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)
    for cls in range(num_classes):
        scores, matches, n_gt = [], [], 0
        for image_id, (gt_boxes, gt_classes) in ground_truth.items():
            gt = np.asarray(gt_boxes).reshape(-1, 4)[np.asarray(gt_classes) == cls]
            n_gt += len(gt)
            det = predictions.get(image_id)
            if det is None or len(det) == 0:
                continue
            mine = det.classes == cls
            dt_scores = det.scores[mine]
            order = np.argsort(-dt_scores, kind="mergesort")[:max_dets]
            scores.append(dt_scores[order])
            matches.append(_match(gt, det.boxes_xyxy[mine][order]))
        if n_gt == 0:
            continue
        if scores:
            per_class_ap[cls] = _average_precision(np.concatenate(scores), np.concatenate(matches, axis=1), n_gt)
        else:
            per_class_ap[cls] = 0.0
    present = ~np.isnan(per_class_ap[:, 0])
    map50_95 = float(per_class_ap[present].mean()) if present.any() else float("nan")
    map50 = float(per_class_ap[present, 0].mean()) if present.any() else float("nan")
    return DetectionMetrics(map50_95, map50, per_class_ap.mean(axis=1), per_class_ap[:, 0], len(ground_truth))
