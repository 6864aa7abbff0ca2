"""Per-detection and per-image uncertainty from a detector's class probabilities and scores,
vectorised over a pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from mgral_core.detections import Detections

Reduction = Literal["mean", "sum", "max"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "max")


def normalized_class_probs(class_probs: np.ndarray) -> np.ndarray:
    """Rows of (N, C) non-negative class probabilities rescaled to sum to one, as (N, C) float64.

    A row of zeros stays zeros (sigmoid outputs never produce one). Does not clip or smooth.

    Raises:
        ValueError: negative or non-finite probabilities.
    """
    p = np.asarray(class_probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"class_probs must be (N, C), got shape {p.shape}")
    if p.size and (not np.isfinite(p).all() or p.min() < 0):
        raise ValueError("class_probs must be finite and non-negative")
    total = p.sum(axis=1, keepdims=True)  # (N, 1)
    return p / np.where(total > 0, total, 1.0)


def detection_entropy(class_probs: np.ndarray) -> np.ndarray:
    """(N,) Shannon entropy in nats of each detection's class distribution, from (N, C) probabilities.

    YOLOv8 scores every class with its own sigmoid, so a row need not sum to one. We rescale each
    row into a categorical distribution over classes and take its entropy: this measures how
    confused the detector is *between classes* for that box (0 for one class, log C for all
    equal), which is what entropy sampling means in classification.

    What it does not measure: how sure the detector is that the box is an object at all. Rows
    (0.9, 0.9) and (0.02, 0.02) both give log 2. The alternative, the sum of per-class binary
    entropies sum_c H(p_c), keeps that information but grows with C and is dominated by the many
    near-zero classes' small terms; least-confidence (below) is the score that looks at confidence.
    """
    p = normalized_class_probs(class_probs)  # (N, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return -plogp.sum(axis=1)


def entropy_scores(detections: Sequence[Detections], reduce: Reduction) -> np.ndarray:
    """(U,) mean, sum or max of the detection entropies of each image, in the order given.

    An image without detections scores 0.0 under every reduction: 0 is the empty sum and the
    empty max of non-negative values, and we give the mean the same value so that the three
    agree that "nothing detected" is "nothing uncertain found". Entropy strategies therefore rank
    such images last; least-confidence ranks them first (see `least_confidence_scores`).

    Raises:
        ValueError: unknown `reduce`, or an image with detections but without class_probs.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")
    counts = np.array([len(det) for det in detections], np.int64)  # (U,)
    out = np.zeros(len(detections))
    nonempty = np.flatnonzero(counts)
    if len(nonempty) == 0:
        return out
    for i in nonempty:
        if detections[i].class_probs is None:
            raise ValueError(f"image {i} has {counts[i]} detections but no class_probs; entropy needs them")
    values = detection_entropy(np.concatenate([detections[i].class_probs for i in nonempty]))  # (sum N,)
    starts = np.concatenate([[0], np.cumsum(counts[nonempty])[:-1]])  # (U',) where each image's rows begin
    if reduce == "max":
        out[nonempty] = np.maximum.reduceat(values, starts)
    else:
        out[nonempty] = np.add.reduceat(values, starts)
        if reduce == "mean":
            out[nonempty] /= counts[nonempty]
    return out


def least_confidence_scores(detections: Sequence[Detections]) -> np.ndarray:
    """(U,) 1 - the highest detection score of each image, in the order given.

    An image without detections scores 1.0. Detections are kept above a confidence threshold
    (0.001 in `detector.predict_images`), so an empty image is one whose best box scored below it:
    1 - max(score) is then above 0.999, and 1.0 is that limit rather than an arbitrary value.
    Consequence, the known weakness of this score: images the detector confidently calls
    background rank first. Entropy scores treat them the opposite way (0, ranked last).
    """
    return np.array([1.0 - float(det.scores.max()) if len(det) else 1.0 for det in detections])


def image_entropy(det: Detections, reduce: Reduction) -> float:
    """Mean, sum or max of one image's detection entropies; 0.0 without detections (see `entropy_scores`)."""
    return float(entropy_scores([det], reduce)[0])


def least_confidence(det: Detections) -> float:
    """1 - the image's highest detection score; 1.0 without detections (see `least_confidence_scores`)."""
    return float(least_confidence_scores([det])[0])
