"""CDAL-style contextual diversity (Agarwal et al., ECCV 2020): k-center greedy on the symmetric KL
between the class distributions of images' detections."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgral_core.detections import Detections
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.coreset import BLOCK_ELEMENTS, greedy_k_center
from mgral_core.strategies.ranking import check_budget
from mgral_core.strategies.uncertainty_sampling import candidate_detections
from mgral_core.uncertainty import normalized_class_probs

SMOOTHING = 1e-6  # probability mass added to every class so that KL stays finite


def image_class_distributions(detections: Sequence[Detections], num_classes: int,
                              smoothing: float = SMOOTHING) -> np.ndarray:
    """(U, C) one class distribution per image: its detections' class vectors averaged by confidence.

    Each detection's sigmoid class probabilities are first rescaled to sum to one, then averaged
    with weights score / sum(scores) (plain mean if all scores are 0). Every row is smoothed as
    (p + smoothing) / (1 + C * smoothing). An image without detections (or without class_probs)
    gets the uniform distribution: no class evidence at all. Does not look at boxes.
    """
    out = np.full((len(detections), num_classes), 1.0 / num_classes)
    for i, det in enumerate(detections):
        if len(det) == 0 or det.class_probs is None:
            continue
        if det.class_probs.shape[1] != num_classes:
            raise ValueError(f"image {i}: class_probs has {det.class_probs.shape[1]} classes, expected {num_classes}")
        p = normalized_class_probs(det.class_probs)  # (N, C)
        w = np.asarray(det.scores, np.float64)  # (N,)
        w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
        out[i] = w @ p
    return (out + smoothing) / (1.0 + num_classes * smoothing)


def symmetric_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(U, B) 0.5 KL(p_i || q_j) + 0.5 KL(q_j || p_i) between rows of p (U, C) and q (B, C).

    Rows must be strictly positive distributions (see `image_class_distributions`). Uses
    0.5 * sum_c (p_c - q_c)(log p_c - log q_c) written as matrix products; clipped at 0 against
    rounding. Builds the whole (U, B) matrix: see `nearest_symmetric_kl` for large B.
    """
    log_p, log_q = np.log(p), np.log(q)
    return _symmetric_kl(p, log_p, (p * log_p).sum(1), q, log_q, (q * log_q).sum(1))


def _symmetric_kl(p: np.ndarray, log_p: np.ndarray, self_p: np.ndarray, q: np.ndarray, log_q: np.ndarray,
                  self_q: np.ndarray) -> np.ndarray:
    """`symmetric_kl` from the rows' logs and their sums p·log p, computed once by a caller that needs many
    columns (k-center greedy: one column per pick)."""
    self_terms = self_p[:, None] + self_q[None, :]  # (U, B)
    return np.maximum(0.5 * (self_terms - p @ log_q.T - log_p @ q.T), 0.0)


def nearest_symmetric_kl(p: np.ndarray, q: np.ndarray, block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
    """(U,) symmetric KL from each row of p (U, C) to its closest row of q (B, C), in bounded blocks."""
    out = np.full(len(p), np.inf)
    rows = max(1, min(len(p), block_elements))
    cols = max(1, block_elements // rows)
    for r in range(0, len(p), rows):
        for c in range(0, len(q), cols):
            np.minimum(out[r:r + rows], symmetric_kl(p[r:r + rows], q[c:c + cols]).min(axis=1), out=out[r:r + rows])
    return out


def cdal(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """k unlabeled ids by k-center greedy on contextual diversity (symmetric KL of class distributions).

    The labeled images are the initial centers when their detections are in `pool.detections`
    (the pool view normally carries unlabeled ones only); otherwise the first center is drawn
    with `rng`. Images without detections share the uniform distribution, so at most one of
    them is picked while any candidate at positive distance remains. Ignores embeddings.

    Departures from the paper, which computes, per predicted class c, the mean over the pixels
    (or regions) predicted as c of their softmax vectors weighted by their entropy, and sums the
    symmetric KL over classes: we have one sigmoid class vector per detection, so we use a
    single distribution per image weighted by confidence, and rescale sigmoid rows to sum to one.
    We implement the paper's core-set variant only, not its reinforcement-learning one.
    """
    check_budget(pool, k)
    if k == 0:
        return []
    p = image_class_distributions(candidate_detections(pool), pool.num_classes)  # (U, C)
    labeled = [pool.detections[str(i)] for i in pool.labeled_ids if str(i) in pool.detections]
    nearest = None
    if labeled:
        centers = image_class_distributions(labeled, pool.num_classes)  # (L', C)
        nearest = nearest_symmetric_kl(p, centers)  # (U,)

    log_p = np.log(p)  # (U, C), once: every pick reuses it (S picks cost S matrix-vector products, no logs)
    self_p = (p * log_p).sum(1)  # (U,)

    def distance_to(row: int) -> np.ndarray:
        one = slice(row, row + 1)
        return _symmetric_kl(p, log_p, self_p, p[one], log_p[one], self_p[one])[:, 0]  # (U,)

    return [str(pool.unlabeled_ids[i]) for i in greedy_k_center(len(p), nearest, distance_to, k, rng)]
