"""Per-image uncertainty from a detector's class probabilities (for entropy-style baselines).

YOLOv8 scores classes with independent sigmoids, so a detection's probability row need not sum
to one; we normalise it into a distribution before taking its entropy (the alternative, a sum of
binary entropies, rewards many near-zero classes equally and ranks worse on long-tailed data).
An image without detections has entropy 0 (nothing uncertain was found) and least-confidence 1.
"""

from __future__ import annotations

import numpy as np

from mgral_core.detections import Detections


def detection_entropy(class_probs: np.ndarray) -> np.ndarray:
    """(N,) Shannon entropy (nats) of each row of (N, C) probabilities after normalisation."""
    p = np.clip(class_probs.astype(np.float64), 1e-12, None)
    p = p / p.sum(axis=1, keepdims=True)
    return -(p * np.log(p)).sum(axis=1)


def image_entropy(det: Detections, reduce: str) -> float:
    """Mean, sum or max of the detections' entropies; 0.0 for an image without detections."""
    if len(det) == 0 or det.class_probs is None:
        return 0.0
    values = detection_entropy(det.class_probs)
    if reduce == "mean":
        return float(values.mean())
    if reduce == "sum":
        return float(values.sum())
    if reduce == "max":
        return float(values.max())
    raise ValueError(f"unknown reduction {reduce!r}; use mean, sum or max")


def least_confidence(det: Detections) -> float:
    """1 - the highest detection score; 1.0 when the detector found nothing."""
    return 1.0 - float(det.scores.max()) if len(det) else 1.0
