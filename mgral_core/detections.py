"""Per-image detector output in one checked structure, converted from Ultralytics once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections of one image, every field with the same first dimension N.

    Attributes:
        boxes_xyxy: (N, 4) float32 boxes in pixels, each row (x1, y1, x2, y2).
        scores: (N,) float32 confidence of the predicted class.
        classes: (N,) int64 predicted class index.
        class_probs: (N, C) float32 per-class sigmoid probabilities of each box
            (Ultralytics YOLO scores classes independently, so rows need not sum to 1),
            or None where the producer did not keep them.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes_xyxy.shape != (n, 4):
            raise ValueError(f"boxes_xyxy must be (N, 4) with N={n}, got {self.boxes_xyxy.shape}")
        if self.classes.shape != (n,):
            raise ValueError(f"classes must be (N,) with N={n}, got {self.classes.shape}")
        if self.scores.ndim != 1:
            raise ValueError(f"scores must be (N,), got {self.scores.shape}")
        if self.class_probs is not None and (self.class_probs.ndim != 2 or len(self.class_probs) != n):
            raise ValueError(f"class_probs must be (N, C) with N={n}, got {self.class_probs.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, num_classes: int | None = None) -> "Detections":
        probs = None if num_classes is None else np.zeros((0, num_classes), np.float32)
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), probs)


def sampled_labels(detections: Detections, image_id: str, draw: int, seed: int, floor: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One draw of labels from a detector's predictive distribution (an EMOC-style proxy, Freytag et al. 2014).

    Each detection scoring at least `floor` is kept with probability equal to its score; its class is
    drawn from its class probabilities (normalised) where the detections carry them, else it keeps the
    predicted class. The random numbers depend only on (seed, draw, image_id), never on the batch, so
    an image gets the same labels in every record of a cycle (common random numbers).

    Returns:
        (boxes_xyxy (M, 4) float32, classes (M,) int64), M <= len(detections).
    """
    digest = int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed, draw, digest])
    n = len(detections)
    keep_draw, class_draw = rng.random(n), rng.random(n)  # both drawn for every box: a box's fate is its own
    keep = (detections.scores >= floor) & (keep_draw < detections.scores)
    classes = detections.classes.copy()
    if detections.class_probs is not None and n:
        probs = np.clip(detections.class_probs.astype(np.float64), 0, None)
        totals = probs.sum(1, keepdims=True)
        cumulative = np.cumsum(np.where(totals > 0, probs / np.where(totals > 0, totals, 1), 0), 1)
        drawn = (cumulative < class_draw[:, None]).sum(1)
        classes = np.where(totals[:, 0] > 0, np.minimum(drawn, probs.shape[1] - 1), classes)
    return detections.boxes_xyxy[keep].astype(np.float32), classes[keep].astype(np.int64)


def expected_objects(detections: Sequence[Detections], floor: float) -> float:
    """The expected number of objects per image of a batch: the mean over its images of the summed scores >= floor.

    A record value that needs no training (`lookup_table.value: expected_objects`). On the built-in
    benchmark's batches it orders the real fine-tunes' outcomes better than any pseudo-label
    proxy measured (docs/method.md, "The reward chain"). An empty batch is worth 0.
    """
    if not len(detections):
        return 0.0
    return float(np.mean([d.scores[d.scores >= floor].sum(dtype=np.float64) for d in detections]))


def expected_class_counts(detections: Sequence[Detections], floor: float, num_classes: int) -> np.ndarray:
    """(C,) the objects of each class a batch is expected to hold: the class probabilities of its detections
    scoring >= floor, summed (a detection without them counts its score for its predicted class)."""
    counts = np.zeros(num_classes, np.float64)
    for d in detections:
        keep = d.scores >= floor
        if d.class_probs is not None:
            counts += d.class_probs[keep].sum(0, dtype=np.float64)[:num_classes]
        else:
            np.add.at(counts, d.classes[keep], d.scores[keep].astype(np.float64))
    return counts


def class_gain(labeled_counts: np.ndarray, batch_counts: np.ndarray, group_weights: np.ndarray | None = None
               ) -> float:
    """The mean over classes of log((1 + n_c + e_c) / (1 + n_c)): a log learning curve per class, mAP being the
    mean of per-class APs, for L's n_c labeled objects of class c and B's e_c expected ones (`lookup_table.value:
    class_gain`). Concave in each class's count, so a batch is worth more when it adds objects of classes L has
    few of, and a second batch of the same class adds less than the first.

    With (G, C) counts, one row per group of images (`lookup_table.class_gain_groups`: clusters of the pool's
    embeddings, e.g. its domains), the curve is per class *and group* and the groups are weighted by
    `group_weights` (G,) (their share of the pool; summing to 1): sum_g w_g mean_c log((1 + n_gc + e_gc) /
    (1 + n_gc)). Objects of a group L has few of are then worth more, which a count per class cannot see.
    One group with weight 1 is the plain class gain.
    """
    labeled, batch = np.asarray(labeled_counts, np.float64), np.asarray(batch_counts, np.float64)
    if labeled.shape != batch.shape:
        raise ValueError(f"class counts differ in shape: {labeled.shape} labeled, {batch.shape} in the batch")
    gains = np.log1p(labeled + batch) - np.log1p(labeled)  # (C,) or (G, C)
    if gains.ndim == 1:
        return float(np.mean(gains))
    if group_weights is None or np.shape(group_weights) != (len(gains),):
        raise ValueError(f"class counts of {len(gains)} groups need {len(gains)} group weights, got "
                         f"{None if group_weights is None else np.shape(group_weights)}")
    return float(np.asarray(group_weights, np.float64) @ gains.mean(1))


DETECTION_VALUES = ("expected_objects", "class_gain")


class DetectionValue:
    """A batch's detection value (`expected_objects` or `class_gain`) from per-image sums computed once.

    The values of `expected_objects` and `class_gain` over a batch of the pool, in microseconds per batch:
    what an agent needs to use the value itself as its reward (`reward.estimator: exact`) instead of an
    estimate from lookup-table records.

    Args:
        detections_by_id: {image id: Detections} of the pool.
        kind: "expected_objects" or "class_gain".
        floor: detections scoring below it are ignored (`lookup_table.expected_floor`).
        num_classes: C, for class_gain.
        labeled_counts: (C,) L's labeled objects per class, for class_gain; (G, C) per group with `groups`.
        groups: (U,) the group in [0, G) of each image of `detections_by_id` (class_gain per group and class);
            None = one group.
        group_weights: (G,) the groups' weights (their shares of the pool, summing to 1); None = their shares
            of `groups`. Give them when `detections_by_id` is only part of the pool.
    """

    def __init__(self, detections_by_id: dict[str, Detections], kind: str, floor: float, num_classes: int = 0,
                 labeled_counts: np.ndarray | None = None, groups: np.ndarray | None = None,
                 group_weights: np.ndarray | None = None):
        if kind not in DETECTION_VALUES:
            raise ValueError(f"unknown detection value {kind!r}; use one of {', '.join(DETECTION_VALUES)}")
        self.groups, self.group_weights = None, None
        if kind == "class_gain":
            n_groups = None if groups is None else (np.shape(labeled_counts)[0] if np.ndim(labeled_counts) == 2
                                                    else 0)
            shape = (num_classes,) if groups is None else (n_groups, num_classes)
            if labeled_counts is None or np.shape(labeled_counts) != shape or (groups is not None and not n_groups):
                raise ValueError(f"class_gain needs L's labeled counts of shape "
                                 f"{shape if groups is None else ('G', num_classes)}, got "
                                 f"{None if labeled_counts is None else np.shape(labeled_counts)}")
            if groups is not None:
                self.groups = np.asarray(groups, np.int64).reshape(-1)  # (U,)
                if len(self.groups) != len(detections_by_id):
                    raise ValueError(f"groups has {len(self.groups)} entries for {len(detections_by_id)} images")
                if len(self.groups) and not 0 <= self.groups.min() <= self.groups.max() < n_groups:
                    raise ValueError(f"groups must lie in [0, {n_groups}), the rows of labeled_counts")
                self.group_weights = (np.bincount(self.groups, minlength=n_groups) / max(len(self.groups), 1)
                                      if group_weights is None else np.asarray(group_weights, np.float64))
                if self.group_weights.shape != (n_groups,):
                    raise ValueError(f"group_weights must have {n_groups} entries, got {self.group_weights.shape}")
        self.kind = kind
        self.row = {str(image): row for row, image in enumerate(detections_by_id)}
        detections = list(detections_by_id.values())
        if kind == "expected_objects":  # (U, 1) each image's expected objects
            self.per_image = np.array([[expected_objects([d], floor)] for d in detections], np.float64)
        else:  # (U, C) each image's expected objects per class
            self.per_image = np.array([expected_class_counts([d], floor, num_classes) for d in detections],
                                      np.float64).reshape(len(detections), num_classes)
            self.labeled = np.asarray(labeled_counts, np.float64)

    def rows(self, batch_ids) -> np.ndarray:
        """(k,) rows of the batch's images; KeyError naming an image without detections."""
        try:
            return np.array([self.row[str(image)] for image in batch_ids], np.int64)
        except KeyError as err:
            raise KeyError(f"no detections for image {err.args[0]!r}: the detection value covers the pool "
                           "inference's images only") from None

    def __call__(self, batch_ids) -> float:
        rows = self.rows(batch_ids)
        if self.kind == "expected_objects":
            return float(self.per_image[rows, 0].mean()) if len(rows) else 0.0
        if self.groups is None:
            return class_gain(self.labeled, self.per_image[rows].sum(0))
        batch = np.zeros_like(self.labeled)  # (G, C)
        np.add.at(batch, self.groups[rows], self.per_image[rows])
        return class_gain(self.labeled, batch, self.group_weights)
