"""Reward estimator: the proxy mAP of L ∪ B predicted from the lookup table by Wasserstein matching.

Estimated value = inverse-distance weighted mean of the nearest records' values (paper III-F).
When even the nearest record is far (threshold rule), the batch is trained for real through an
injected `direct_value` callable and becomes a new record (bounded per cycle).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr

from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.wasserstein import SlicedIndex, distances_to_records

EPS = 1e-9


class RewardEstimator:
    """Predicts a batch's proxy mAP from the lookup table; see module docstring."""

    def __init__(self, table: LookupTable, embeddings_of: Callable[[np.ndarray], np.ndarray], *,
                 method: str = "sliced", n_neighbors: int = 3, n_projections: int = 128, seed: int = 0,
                 fallback_rule: str = "mean_minus_std", max_fallbacks: int = 0,
                 direct_value: Callable[[np.ndarray], float] | None = None):
        if len(table.records) < 2:
            raise ValueError("the reward estimator needs at least 2 lookup-table records")
        self.records = list(table.records)
        self.embeddings_of = embeddings_of
        self.method, self.n_neighbors = method, n_neighbors
        self.max_fallbacks, self.direct_value = max_fallbacks, direct_value
        self.fallbacks = 0
        self.index = (SlicedIndex.build([r.embeddings for r in self.records], n_projections, seed)
                      if method == "sliced" else None)
        self.threshold = self._threshold(fallback_rule)

    def _record_distances(self, embeddings: np.ndarray) -> np.ndarray:
        return distances_to_records(embeddings, [r.embeddings for r in self.records], self.method, self.index)

    def _threshold(self, rule: str) -> float:
        """Distance beyond which a batch is 'far from every record' (paper: mean - std of record distances)."""
        if rule == "never":
            return float("inf")
        pairwise = np.concatenate([np.delete(self._record_distances(r.embeddings), i)
                                   for i, r in enumerate(self.records)])
        if rule == "mean_minus_std":
            return float(pairwise.mean() - pairwise.std())
        if rule.startswith("quantile:"):
            return float(np.quantile(pairwise, float(rule.split(":", 1)[1])))
        raise ValueError(f"unknown fallback rule {rule!r}")

    @property
    def reference_value(self) -> float:
        """Mean record value: the expected proxy mAP of a random batch."""
        return float(np.mean([r.value for r in self.records]))

    def estimate_embeddings(self, embeddings: np.ndarray, exclude: int | None = None) -> float:
        d = self._record_distances(embeddings)  # (R,)
        values = np.array([r.value for r in self.records])
        if exclude is not None:
            d, values = np.delete(d, exclude), np.delete(values, exclude)
        nearest = np.argsort(d, kind="stable")[:self.n_neighbors]
        if d[nearest[0]] < EPS:
            return float(values[nearest[0]])
        weights = 1.0 / (d[nearest] + EPS)
        return float((weights * values[nearest]).sum() / weights.sum())

    def __call__(self, batch_ids: np.ndarray) -> float:
        """Estimated proxy mAP of L ∪ batch; may train directly (fallback) when the batch is far."""
        embeddings = self.embeddings_of(batch_ids)  # (k, D)
        nearest = float(self._record_distances(embeddings).min())
        if nearest > self.threshold and self.direct_value is not None and self.fallbacks < self.max_fallbacks:
            self.fallbacks += 1
            value = float(self.direct_value(batch_ids))
            self.records.append(LookupRecord(f"fallback_{self.fallbacks:03d}", np.asarray(batch_ids), embeddings,
                                             value, {"fallback": True}))
            if self.index is not None:
                self.index = self.index.add(embeddings)
            return value
        return self.estimate_embeddings(embeddings)


def leave_one_out_spearman(estimator: RewardEstimator) -> float:
    """Spearman between each record's value and its estimate from the other records."""
    values = np.array([r.value for r in estimator.records])
    if len(values) < 3 or np.ptp(values) == 0:
        return float("nan")
    estimates = [estimator.estimate_embeddings(r.embeddings, exclude=i) for i, r in enumerate(estimator.records)]
    return float(spearmanr(values, estimates).statistic)
