"""Wasserstein distances between a candidate batch's embeddings and every lookup-table record.

`exact`: W2 by optimal transport (POT's ot.emd2 on squared Euclidean costs, square-rooted).
`sliced`: sliced W2 over fixed random projections; each record's sorted projections are computed
once per cycle (`SlicedIndex`), so a query only projects and sorts the candidate batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot


def exact_w2(a: np.ndarray, b: np.ndarray) -> float:
    """W2 between uniform point clouds a (n, D) and b (m, D)."""
    cost = ot.dist(a.astype(np.float64), b.astype(np.float64))  # (n, m) squared Euclidean
    w2_squared = ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost, numItermax=1_000_000)
    return float(np.sqrt(max(w2_squared, 0.0)))


def _quantiles(projected: np.ndarray, m: int) -> np.ndarray:
    """(P, m) quantile functions of each column of projected (n, P), resampled to m points."""
    ordered = np.sort(projected, axis=0)  # (n, P)
    positions = (np.arange(m) + 0.5) / m * len(ordered) - 0.5
    lo = np.clip(np.floor(positions).astype(int), 0, len(ordered) - 1)
    hi = np.clip(lo + 1, 0, len(ordered) - 1)
    frac = np.clip(positions - lo, 0, 1)[:, None]
    return (ordered[lo] * (1 - frac) + ordered[hi] * frac).T  # (P, m)


@dataclass(frozen=True)
class SlicedIndex:
    """Random unit projections (P, D) and every record's quantiles (R, P, m)."""

    projections: np.ndarray
    record_quantiles: np.ndarray

    @classmethod
    def build(cls, record_embeddings: list[np.ndarray], n_projections: int, seed: int, m: int = 64) -> "SlicedIndex":
        dim = record_embeddings[0].shape[1]
        directions = np.random.default_rng(seed).normal(size=(n_projections, dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)  # (P, D)
        quantiles = np.stack([_quantiles(e @ directions.T, m) for e in record_embeddings])  # (R, P, m)
        return cls(directions, quantiles)

    def add(self, embeddings: np.ndarray) -> "SlicedIndex":
        q = _quantiles(embeddings @ self.projections.T, self.record_quantiles.shape[2])
        return SlicedIndex(self.projections, np.concatenate([self.record_quantiles, q[None]]))

    def distances(self, candidate: np.ndarray) -> np.ndarray:
        """(R,) sliced W2 from candidate (n, D) to every record."""
        q = _quantiles(candidate @ self.projections.T, self.record_quantiles.shape[2])  # (P, m)
        return np.sqrt(((self.record_quantiles - q[None]) ** 2).mean(axis=(1, 2)))


def distances_to_records(candidate: np.ndarray, records: list[np.ndarray], method: str,
                         index: SlicedIndex | None = None) -> np.ndarray:
    """(R,) distance from candidate (n, D) to each record's embeddings by `method`."""
    if method == "exact":
        return np.array([exact_w2(candidate, r) for r in records])
    if method == "sliced":
        if index is None:
            raise ValueError("the sliced method needs a SlicedIndex built from the records")
        return index.distances(candidate)
    raise ValueError(f"unknown distance method {method!r}; use 'exact' or 'sliced'")
