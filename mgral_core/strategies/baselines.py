"""Baseline strategies: random, entropy (mean/sum/max), least-confidence and core-set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mgral_core.strategies.base import PoolView
from mgral_core.strategies.ranking import check_budget, top_k_by_score
from mgral_core.uncertainty import image_entropy, least_confidence


def random_sampling(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    check_budget(pool, k)
    return [str(i) for i in rng.choice(pool.unlabeled_ids, size=k, replace=False)]


def _score_strategy(score: Callable) -> Callable[[PoolView, int, np.random.Generator], list[str]]:
    def strategy(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
        check_budget(pool, k)
        scores = np.array([score(pool.detections[i]) for i in pool.unlabeled_ids])
        return top_k_by_score(pool, scores, k, rng)
    return strategy


entropy_mean = _score_strategy(lambda det: image_entropy(det, "mean"))
entropy_sum = _score_strategy(lambda det: image_entropy(det, "sum"))
entropy_max = _score_strategy(lambda det: image_entropy(det, "max"))
least_confidence_sampling = _score_strategy(least_confidence)


def coreset(pool: PoolView, k: int, rng: np.random.Generator, chunk: int = 4096) -> list[str]:
    """k-center greedy (Sener & Savarese): repeatedly take the candidate farthest from every center.

    Labeled embeddings are the initial centers; with none, the first center is drawn with `rng`.
    Distances are squared Euclidean, computed in chunks so large pools fit in memory.
    """
    check_budget(pool, k)
    if k == 0:
        return []
    x = pool.unlabeled_embeddings.astype(np.float32)  # (U, D)
    nearest = np.full(len(x), np.inf, np.float32)  # (U,) distance to the closest center

    def update(centers: np.ndarray) -> None:
        for start in range(0, len(centers), chunk):
            c = centers[start:start + chunk]  # (B, D)
            d = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None, :]  # (U, B)
            np.minimum(nearest, d.min(1), out=nearest)

    chosen: list[int] = []
    if len(pool.labeled_embeddings):
        update(pool.labeled_embeddings.astype(np.float32))
    else:
        first = int(rng.integers(len(x)))
        chosen.append(first)
        update(x[first:first + 1])
    while len(chosen) < k:
        nearest[chosen] = -np.inf
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        update(x[pick:pick + 1])
    return [str(pool.unlabeled_ids[i]) for i in chosen]
