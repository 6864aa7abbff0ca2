"""Core-set selection (Sener & Savarese, ICLR 2018): k-center greedy over image embeddings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mgral_core.strategies.base import PoolView
from mgral_core.strategies.ranking import check_budget

BLOCK_ELEMENTS = 1 << 24  # entries of one (rows, centers) distance block: 64 MiB in float32


def greedy_k_center(n_candidates: int, nearest: np.ndarray | None, distance_to: Callable[[int], np.ndarray],
                    k: int, rng: np.random.Generator) -> list[int]:
    """Rows of k candidates, each the one farthest from every center so far (k-center greedy).

    Args:
        n_candidates: number of candidate rows U.
        nearest: (U,) each candidate's distance to its closest initial center (the labeled set),
            or None when there are no initial centers; then the first pick is drawn with `rng`.
        distance_to: maps a candidate row r to the (U,) distances of all candidates to row r.
        k: how many rows to pick, at most U.
        rng: used only for that first pick.

    Ties for the farthest candidate go to the lowest row. Any dissimilarity works (squared
    Euclidean, symmetric KL); the factor-2 guarantee of k-center greedy needs a metric, and
    neither of those is one (both keep the greedy's farthest-first behaviour).
    """
    if k == 0:
        return []
    chosen: list[int] = []
    if nearest is None:
        chosen.append(int(rng.integers(n_candidates)))
        nearest = np.asarray(distance_to(chosen[0]), np.float64).copy()  # (U,)
        nearest[chosen[0]] = -np.inf
    else:
        nearest = np.asarray(nearest, np.float64).copy()  # (U,)
    while len(chosen) < k:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        np.minimum(nearest, distance_to(pick), out=nearest)
        nearest[pick] = -np.inf  # chosen rows stay at -inf: min(-inf, d) = -inf
    return chosen


def min_squared_distances(x: np.ndarray, centers: np.ndarray, block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
    """(U,) squared Euclidean distance from each row of x (U, D) to its nearest row of centers (L, D).

    Computed block by block as |x|^2 - 2 x.c + |c|^2, no block holding more than `block_elements`
    distances (64 MiB in float32 by default, a few such temporaries at once), so 100k x 256
    candidates against 100k centers never builds the (U, L) matrix. Clipped at 0 against
    rounding. Does not return which center is nearest.
    """
    x = np.asarray(x, np.float32)
    centers = np.asarray(centers, np.float32)
    out = np.full(len(x), np.inf)
    x_sq = (x.astype(np.float64) ** 2).sum(1).astype(np.float32)  # (U,)
    c_sq = (centers.astype(np.float64) ** 2).sum(1).astype(np.float32)  # (L,)
    rows = max(1, min(len(x), block_elements))
    cols = max(1, block_elements // max(rows, 1))
    for r in range(0, len(x), rows):
        for c in range(0, len(centers), cols):
            cross = x[r:r + rows] @ centers[c:c + cols].T  # (rows, cols)
            d = x_sq[r:r + rows, None] - 2 * cross + c_sq[None, c:c + cols]
            np.minimum(out[r:r + rows], d.min(axis=1), out=out[r:r + rows])
    return np.maximum(out, 0.0)


def coreset(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """k unlabeled ids by k-center greedy on embeddings, the labeled embeddings being the initial centers.

    Without labeled images the first center is drawn with `rng`; otherwise the result does not
    depend on `rng`. Distances are squared Euclidean (same order as Euclidean). Ignores detections.
    """
    check_budget(pool, k)
    if k == 0:
        return []
    x = np.asarray(pool.unlabeled_embeddings, np.float32)  # (U, D)
    x_sq = (x.astype(np.float64) ** 2).sum(1)  # (U,)
    nearest = min_squared_distances(x, pool.labeled_embeddings) if len(pool.labeled_embeddings) else None

    def distance_to(row: int) -> np.ndarray:
        return np.maximum(x_sq - 2 * (x @ x[row]) + x_sq[row], 0.0)  # (U,)

    return [str(pool.unlabeled_ids[i]) for i in greedy_k_center(len(x), nearest, distance_to, k, rng)]
