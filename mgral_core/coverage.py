"""How far a labeled set's mix of images is from the pool's: a warning for selections that leave kinds of image out.

A strategy that takes most of its batches from a few kinds of image (the clean images where the detector
sees many objects, say) can gain on those and lose on the rest; the test split, drawn like the pool, has
all of them. Without any labels, the kinds are k-means clusters of the cycle's embeddings, and the gap is
the total variation distance between the clusters' shares of the labeled set and of the pool:
0 = the same mix, 1 = disjoint. Random sampling keeps it near sampling noise (about 0.05 for a few hundred
images over 8 clusters on the built-in benchmark); docs/method.md gives the figures of the built-in
benchmark's strategies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgral_core.shortlist import kmeans


@dataclass(frozen=True)
class Coverage:
    """Cluster shares of the pool, of a batch and of the labeled set after it, and their gaps to the pool.

    Attributes:
        pool_share: (K,) each cluster's share of the pool (labeled and unlabeled images).
        batch_share: (K,) of the batch.
        labeled_share: (K,) of the labeled set including the batch.
        batch_gap: total variation distance between batch_share and pool_share.
        labeled_gap: the same for labeled_share.
    """

    pool_share: np.ndarray
    batch_share: np.ndarray
    labeled_share: np.ndarray
    batch_gap: float
    labeled_gap: float

    def under_represented(self, ratio: float = 0.5) -> list[int]:
        """Clusters whose share of the labeled set is below `ratio` times their share of the pool."""
        return [int(c) for c in np.flatnonzero(self.labeled_share < ratio * self.pool_share)]


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance between two distributions over the same K outcomes."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"distributions of different lengths: {p.shape} and {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


def _shares(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_clusters) / max(len(labels), 1)


def selection_coverage(labeled_embeddings: np.ndarray, unlabeled_embeddings: np.ndarray, batch_rows: np.ndarray,
                       n_clusters: int, seed: int) -> Coverage:
    """The coverage of L and of L ∪ B, B = `batch_rows` of the unlabeled embeddings, over k-means clusters of all.

    Args:
        labeled_embeddings: (L, D).
        unlabeled_embeddings: (U, D).
        batch_rows: (k,) rows of the batch in unlabeled_embeddings.
        n_clusters: K (capped at the pool's size).
        seed: fixes the clustering.
    """
    pool = np.concatenate([np.asarray(labeled_embeddings, np.float32).reshape(-1, unlabeled_embeddings.shape[1]),
                           np.asarray(unlabeled_embeddings, np.float32)])  # (L + U, D)
    if not len(pool):
        raise ValueError("an empty pool has no coverage")
    k = min(n_clusters, len(pool))
    _, labels = kmeans(pool, k, seed=seed)  # (L + U,)
    n_labeled = len(labeled_embeddings)
    batch = labels[n_labeled + np.asarray(batch_rows, np.int64)]
    after = np.concatenate([labels[:n_labeled], batch])
    pool_share, batch_share, labeled_share = _shares(labels, k), _shares(batch, k), _shares(after, k)
    return Coverage(pool_share, batch_share, labeled_share, total_variation(batch_share, pool_share),
                    total_variation(labeled_share, pool_share))
