"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a Budget"): the most typical
image of each cluster that nothing labeled or selected covers yet."""

from __future__ import annotations

import numpy as np

from mgral_core.shortlist import kmeans
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.ranking import check_budget

MAX_CLUSTERS = 500  # the paper's cap on |L| + k clusters, for the cost of k-means
MIN_CLUSTER_SIZE = 5  # clusters of at most this many images are used only once the larger ones are exhausted
K_NN = 20  # neighbours of the typicality estimate
KMEANS_ITERATIONS = 20
_BLOCK_ROWS = 2048  # rows of one (rows, m) distance block inside a cluster


def typicality(x: np.ndarray, k_nn: int = K_NN) -> np.ndarray:
    """(m,) 1 / mean Euclidean distance of each row of x (m, D) to its k nearest other rows.

    Uses k = min(k_nn, m // 2) neighbours (at least 1), as the paper's code does for small clusters;
    a single row gets typicality 1. Distances are computed in blocks of rows, never the whole
    (m, m) matrix for large m. Adds 1e-8 to the mean distance, so duplicates stay finite.
    """
    x = np.asarray(x, np.float64)
    m = len(x)
    if m <= 1:
        return np.ones(m)
    k = max(1, min(k_nn, m // 2))
    sq = (x ** 2).sum(1)  # (m,)
    out = np.empty(m)
    for start in range(0, m, _BLOCK_ROWS):
        block = x[start:start + _BLOCK_ROWS]  # (b, D)
        d2 = np.maximum(sq[start:start + len(block), None] - 2 * block @ x.T + sq[None, :], 0.0)  # (b, m)
        d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not its own neighbour
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]  # (b, k) the k smallest squared distances
        out[start:start + len(block)] = 1.0 / (np.sqrt(nearest).mean(1) + 1e-8)
    return out


def typiclust(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """k unlabeled ids: one most-typical image per uncovered cluster, largest clusters first.

    Labeled and unlabeled embeddings are clustered together by k-means into
    min(|L| + k, MAX_CLUSTERS, |L| + |U|) clusters (the paper's |L| + B, capped as in its code);
    `rng` seeds the k-means. Each step takes the cluster with the fewest labeled or already
    selected images, the largest first among equals (ties to the lowest cluster index), so every
    cluster is covered once before any is covered twice; clusters of at most MIN_CLUSTER_SIZE
    images come after all larger ones, as the paper drops them. From that cluster it takes the
    unlabeled, not yet selected image of highest typicality (1 / mean distance to its K_NN nearest
    neighbours among the cluster's remaining candidates, recomputed after each pick as in the
    paper's code). Ignores detections.

    Departure from the paper: its embeddings are self-supervised (SimCLR/DINO) features; here they
    are the cycle's detector embeddings, Euclidean as given (as core-set uses them).
    """
    check_budget(pool, k)
    if k == 0:
        return []
    unlabeled = np.asarray(pool.unlabeled_embeddings, np.float32)  # (U, D)
    labeled = np.asarray(pool.labeled_embeddings, np.float32).reshape(-1, unlabeled.shape[1])  # (L, D)
    x = np.concatenate([labeled, unlabeled])  # (L + U, D), labeled rows first
    n_clusters = min(len(labeled) + k, MAX_CLUSTERS, len(x))
    _, labels = kmeans(x, n_clusters, seed=int(rng.integers(0, 2**62)), iterations=KMEANS_ITERATIONS)  # (L + U,)
    sizes = np.bincount(labels, minlength=n_clusters)  # (C,)
    covered = np.bincount(labels[:len(labeled)], minlength=n_clusters)  # (C,) labeled, then + selected
    candidate_labels = labels[len(labeled):].copy()  # (U,) cluster of each unlabeled row, -1 once selected
    small = sizes <= MIN_CLUSTER_SIZE
    chosen: list[int] = []
    while len(chosen) < k:
        open_clusters = np.flatnonzero(np.bincount(candidate_labels[candidate_labels >= 0], minlength=n_clusters))
        order = np.lexsort((open_clusters, -sizes[open_clusters], covered[open_clusters], small[open_clusters]))
        cluster = open_clusters[order[0]]
        rows = np.flatnonzero(candidate_labels == cluster)  # (m,)
        pick = int(rows[np.argmax(typicality(unlabeled[rows]))])
        chosen.append(pick)
        candidate_labels[pick] = -1
        covered[cluster] += 1
    return [str(pool.unlabeled_ids[i]) for i in chosen]
