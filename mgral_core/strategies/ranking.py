"""Shared pieces of strategies: argument checks and a deterministic top-k by score."""

from __future__ import annotations

import numpy as np

from mgral_core.strategies.base import PoolView


def check_budget(pool: PoolView, k: int) -> None:
    if k < 0:
        raise ValueError(f"budget k must be >= 0, got {k}")
    if k > len(pool.unlabeled_ids):
        raise ValueError(f"budget k={k} exceeds the {len(pool.unlabeled_ids)} unlabeled images in the pool")


def top_k_by_score(pool: PoolView, scores: np.ndarray, k: int, rng: np.random.Generator) -> list[str]:
    """The k highest-scoring unlabeled ids; ties broken by a random permutation from `rng`."""
    tiebreak = rng.permutation(len(scores))
    order = np.lexsort((tiebreak, -np.asarray(scores, np.float64)))[:k]
    return [str(pool.unlabeled_ids[i]) for i in order]
