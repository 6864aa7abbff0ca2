"""Wasserstein distances from a candidate batch's embeddings to every lookup-table record's embeddings.

Two methods behind one interface (`build_index`, then `distances_to_records`): `exact` W2 by optimal
transport (POT), and `sliced` W2 over a fixed set of random projections with every record's sorted
projections computed once, so a query only projects and sorts the candidate batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot

DistanceMethod = Literal["exact", "sliced"]
_DIRECTIONS_STREAM = 0x51  # keeps the directions' stream apart from data drawn with the same seed


def exact_w2(a: np.ndarray, b: np.ndarray) -> float:
    """W2 between the uniform empirical measures on the rows of a (n_a, D) and b (n_b, D).

    Solves the transport problem exactly (POT's network simplex on squared Euclidean costs, then a
    square root: `ot.emd2` on `ot.dist` gives W2 squared). Raises RuntimeError if the solver stops
    before optimality rather than returning an approximate value silently.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cost = ot.dist(a64, b64)  # (n_a, n_b) squared Euclidean
    weights_a = np.full(len(a64), 1.0 / len(a64))
    weights_b = np.full(len(b64), 1.0 / len(b64))
    max_iter = max(1_000_000, 50 * len(a64) * len(b64))
    w2_squared, log = ot.emd2(weights_a, weights_b, cost, numItermax=max_iter, log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact W2 between {len(a64)} and {len(b64)} points did not converge: {log['warning']}")
    return float(np.sqrt(max(float(w2_squared), 0.0)))


def random_directions(dim: int, n_projections: int, seed: int) -> np.ndarray:
    """(P, D) unit vectors drawn uniformly on the sphere from `seed`."""
    directions = np.random.default_rng([seed, _DIRECTIONS_STREAM]).normal(size=(n_projections, dim))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def sorted_projections(embeddings: np.ndarray, directions: np.ndarray, n_quantiles: int) -> np.ndarray:
    """(P, m) quantile functions of the batch's projections onto each direction.

    Each projected batch (n values) is sorted and read at the m mid-point levels (j + 0.5) / m as a
    step function, so batches of different sizes compare; when m == n this is exactly the sorted
    projection, and the 1-D W2 between two such rows is exact for equal-sized batches.
    """
    projected = np.asarray(embeddings, np.float64) @ directions.T  # (n, P)
    ordered = np.sort(projected, axis=0)  # (n, P)
    n = len(ordered)
    levels = np.minimum(((np.arange(n_quantiles) + 0.5) / n_quantiles * n).astype(np.int64), n - 1)  # (m,)
    return ordered[levels].T.copy()  # (P, m)


@dataclass(frozen=True)
class ExactIndex:
    """The records' embeddings, for exact W2 (no precomputation is possible)."""

    record_embeddings: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.record_embeddings)

    def distances(self, candidate: np.ndarray) -> np.ndarray:
        """(R,) exact W2 from candidate (n, D) to every record; one transport problem per record."""
        return np.array([exact_w2(candidate, r) for r in self.record_embeddings])

    def add(self, embeddings: np.ndarray) -> ExactIndex:
        """A new index with one more record appended."""
        return ExactIndex((*self.record_embeddings, np.asarray(embeddings)))

    def pairwise(self) -> np.ndarray:
        """(R, R) symmetric record-to-record distances, zero diagonal."""
        r = len(self)
        out = np.zeros((r, r))
        for i in range(r):
            for j in range(i + 1, r):
                out[i, j] = out[j, i] = exact_w2(self.record_embeddings[i], self.record_embeddings[j])
        return out


@dataclass(frozen=True)
class SlicedIndex:
    """Fixed projections and every record's quantile functions along them, for sliced W2.

    Attributes:
        directions: (P, D) unit projection directions, drawn once per cycle from a seed.
        record_quantiles: (R, P, m) each record's sorted projections (see `sorted_projections`).

    Distances are sqrt(D * mean over directions and levels of squared quantile differences): the
    sqrt(D) factor puts sliced W2 on the scale of W2 (they coincide for isotropic differences, and in
    expectation over directions sliced never exceeds exact); it changes no ranking and no
    inverse-distance weight.
    """

    directions: np.ndarray
    record_quantiles: np.ndarray

    @classmethod
    def build(cls, record_embeddings: Sequence[np.ndarray], n_projections: int = 128, seed: int = 0,
              n_quantiles: int = 128) -> SlicedIndex:
        """Draw the directions from `seed` and sort every record's projections once."""
        if not record_embeddings:
            raise ValueError("cannot build a sliced index from zero records")
        directions = random_directions(record_embeddings[0].shape[1], n_projections, seed)  # (P, D)
        quantiles = np.stack([sorted_projections(e, directions, n_quantiles) for e in record_embeddings])
        return cls(directions, quantiles)  # quantiles (R, P, m)

    def __len__(self) -> int:
        return len(self.record_quantiles)

    @property
    def n_quantiles(self) -> int:
        return self.record_quantiles.shape[2]

    def _to_all(self, query_quantiles: np.ndarray) -> np.ndarray:
        """(R,) distances from one (P, m) quantile set to every record in one vectorised op."""
        squared = np.square(self.record_quantiles - query_quantiles[None]).mean(axis=(1, 2))  # (R,)
        return np.sqrt(squared * self.directions.shape[1])

    def distances(self, candidate: np.ndarray) -> np.ndarray:
        """(R,) sliced W2 from candidate (n, D) to every record: one projection, one sort."""
        return self._to_all(sorted_projections(candidate, self.directions, self.n_quantiles))

    def add(self, embeddings: np.ndarray) -> SlicedIndex:
        """A new index with one more record appended (same directions)."""
        q = sorted_projections(embeddings, self.directions, self.n_quantiles)  # (P, m)
        return SlicedIndex(self.directions, np.concatenate([self.record_quantiles, q[None]]))

    def pairwise(self) -> np.ndarray:
        """(R, R) symmetric record-to-record distances, zero diagonal."""
        return np.stack([self._to_all(q) for q in self.record_quantiles])


RecordIndex = ExactIndex | SlicedIndex


def build_index(record_embeddings: Sequence[np.ndarray], method: DistanceMethod = "sliced", *,
                n_projections: int = 128, n_quantiles: int = 128, seed: int = 0) -> RecordIndex:
    """An index over the records' embedding sets (each (k_r, D)) for `distances_to_records`.

    Args:
        record_embeddings: one (k_r, D) array per record; sizes may differ.
        method: "exact" (POT's ot.emd2 per record and query) or "sliced" (precomputed projections).
        n_projections: sliced only: number of random directions P.
        n_quantiles: sliced only: common length m every batch's sorted projections are resampled to.
        seed: sliced only: seeds the directions; use one seed per cycle.
    """
    if method == "exact":
        return ExactIndex(tuple(np.asarray(e) for e in record_embeddings))
    if method == "sliced":
        return SlicedIndex.build(record_embeddings, n_projections, seed, n_quantiles)
    raise ValueError(f"unknown distance method {method!r}; use 'exact' or 'sliced'")


def distances_to_records(candidate_embeddings: np.ndarray, index: RecordIndex) -> np.ndarray:
    """(R,) Wasserstein distance from candidate_embeddings (n, D) to every record in `index`.

    The method is the index's: exact W2 for an `ExactIndex`, sliced W2 for a `SlicedIndex`.
    """
    candidate = np.asarray(candidate_embeddings)
    if candidate.ndim != 2 or len(candidate) == 0:
        raise ValueError(f"candidate embeddings must be a non-empty (n, D) array, got shape {candidate.shape}")
    return index.distances(candidate)
