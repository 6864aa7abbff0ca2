"""Hierarchical selection for large pools: shortlist the candidates the MGRAL agent will read.

The paper suggests hierarchical sampling where MGRAL lags on large pools. Here the agent is
trained and scores only a shortlist of S >= k rows of the pool. The default shortlist is a
cluster-stratified random sample: k-means on the embeddings, then every cluster contributes in
proportion to its size (at least one row each), so the shortlist has the pool's composition
(which keeps candidate batches comparable to the lookup table's random batches) while the agent's
cost falls from U to S steps. This module picks rows; it does not train or score anything.
"""

from __future__ import annotations

import numpy as np

SHORTLIST_METHODS = ("kmeans", "random")  # from the embeddings alone; MGRAL's "cdal" shortlist also reads detections
_KMEANS_STREAM, _SAMPLE_STREAM = 0x5A, 0x5B  # keep these streams apart from other users of the seed
_ASSIGN_BLOCK = 1 << 16  # rows assigned to their nearest center at once


def nearest_center(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(U,) index of the nearest row of centers (C, D) for every row of x (U, D); ties to the lowest index."""
    x = np.asarray(x, np.float32)
    centers = np.asarray(centers, np.float32)
    c_sq = np.einsum("cd,cd->c", centers, centers)  # (C,)
    out = np.empty(len(x), np.int64)
    for start in range(0, len(x), _ASSIGN_BLOCK):
        block = x[start:start + _ASSIGN_BLOCK]  # (b, D)
        out[start:start + len(block)] = np.argmin(c_sq - 2.0 * (block @ centers.T), axis=1)  # |x|^2 dropped
    return out


def kmeans(x: np.ndarray, n_clusters: int, seed: int, iterations: int = 10, fit_rows: int = 20_000
           ) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding, fitted on a seeded sample of `fit_rows` rows.

    Args:
        x: (U, D) embeddings.
        n_clusters: C, at most U.
        seed: fixes the sample, the seeding and so the result.
        iterations: Lloyd iterations on the sample (stops early when assignments stop changing).
        fit_rows: rows the centers are fitted on; every row of x is then assigned to its nearest center.

    Returns:
        centers (C, D) float32 and labels (U,) in [0, C). A cluster can end up empty on the full pool.
    """
    x = np.asarray(x, np.float32)
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"need 1 <= n_clusters <= {len(x)} rows, got {n_clusters}")
    rng = np.random.default_rng([seed, _KMEANS_STREAM])
    sample = x[np.sort(rng.choice(len(x), min(fit_rows, len(x)), replace=False))]  # (n, D)
    centers = _kmeans_plus_plus(sample, n_clusters, rng)
    labels = nearest_center(sample, centers)
    for _ in range(iterations):
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, sample)
        counts = np.bincount(labels, minlength=n_clusters)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]  # an emptied cluster keeps its old center
        new_labels = nearest_center(sample, centers)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return centers, nearest_center(x, centers)


def _kmeans_plus_plus(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """(C, D) initial centers: the first uniformly, each next with probability proportional to the
    squared distance to the nearest center so far (uniformly when every row coincides with a center)."""
    centers = np.empty((n_clusters, x.shape[1]), np.float32)
    centers[0] = x[rng.integers(len(x))]
    nearest = ((x - centers[0]) ** 2).sum(1)  # (n,)
    for c in range(1, n_clusters):
        total = float(nearest.sum())
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centers[c] = x[pick]
        np.minimum(nearest, ((x - centers[c]) ** 2).sum(1), out=nearest)
    return centers


def proportional_quotas(counts: np.ndarray, size: int) -> np.ndarray:
    """(C,) how many rows each cluster of `counts` (C,) contributes to a shortlist of `size` rows.

    Proportional to the counts by largest remainder, at least one row from every non-empty cluster,
    never more than a cluster holds; sums to `size`. Needs size >= the number of non-empty clusters
    and size <= counts.sum().
    """
    counts = np.asarray(counts, np.int64)
    total, nonempty = int(counts.sum()), int((counts > 0).sum())
    if not nonempty <= size <= total:
        raise ValueError(f"a shortlist of {size} needs {nonempty} <= size <= {total}")
    exact = size * counts / total  # (C,)
    quotas = np.maximum(np.floor(exact).astype(np.int64), (counts > 0).astype(np.int64))
    while quotas.sum() > size:  # the floors of one overshot: take back from the largest surplus
        surplus = np.where(quotas > 1, quotas - exact, -np.inf)
        quotas[int(np.argmax(surplus))] -= 1
    order = np.argsort(-(exact - quotas), kind="stable")  # largest remainder first, ties by cluster
    while quotas.sum() < size:
        for c in order:
            if quotas.sum() == size:
                break
            if quotas[c] < counts[c]:
                quotas[c] += 1
    return quotas


def shortlist_size(pool_size: int, size: int) -> int:
    """How many of `pool_size` candidates a shortlist of `size` keeps (0 or size >= pool_size: all of them)."""
    return pool_size if size == 0 or size >= pool_size else size


def check_shortlist_size(k: int, size: int) -> None:
    """ValueError unless `size` is 0 (no shortlist) or at least the budget k."""
    if size < 0 or (0 < size < k):
        raise ValueError(f"shortlist size must be 0 (off) or at least the budget k={k}, got {size}")


def shortlist_rows(embeddings: np.ndarray, k: int, size: int, seed: int, method: str = "kmeans",
                   n_clusters: int = 64) -> np.ndarray:
    """Sorted rows (S,) of embeddings (U, D) the agent should read; all U rows when the shortlist is off.

    Args:
        embeddings: (U, D) the unlabeled pool's embeddings.
        k: the budget; a shortlist smaller than k is refused.
        size: S; 0, or S >= U, means no shortlist (every row is returned).
        seed: fixes the clustering and the sample (same seed, same rows).
        method: "kmeans" (cluster-stratified random sample, see the module docstring) or "random"
            (a uniform random sample of S rows).
        n_clusters: clusters for "kmeans" (at most S and U).
    """
    u = len(embeddings)
    if method not in SHORTLIST_METHODS:
        raise ValueError(f"unknown shortlist method {method!r}; use one of {SHORTLIST_METHODS}")
    check_shortlist_size(k, size)
    if shortlist_size(u, size) == u:
        return np.arange(u)
    rng = np.random.default_rng([seed, _SAMPLE_STREAM])
    if method == "random":
        return np.sort(rng.choice(u, size, replace=False))
    _, labels = kmeans(embeddings, min(n_clusters, size, u), seed)
    counts = np.bincount(labels)
    quotas = proportional_quotas(counts, size)
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])  # rows of each cluster
    picked = [rng.choice(rows, q, replace=False) for rows, q in zip(members, quotas) if q > 0]
    return np.sort(np.concatenate(picked))
