"""Reward estimator: a batch's value predicted from the lookup table by Wasserstein matching (paper III-F).

Two estimates over the same distances: `knn` (the paper's; the default) is the inverse-distance
weighted mean of the n nearest records' values; `gp` is a Gaussian-process regression over every
record (`mgral_core.value_model`). A batch the table does not cover (knn: even the nearest record
is farther than a distance threshold; gp: the predictive standard deviation is above a share of
the prior's) is valued for real through an injected `direct_value` callable (which trains a
detector; not this module's business) and becomes a new record, at most `max_fallbacks` times per
estimator (one estimator per cycle). The distances see the records' embeddings, or any other
per-image representation handed in as `features_of` (e.g. task-aware descriptors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy.stats import spearmanr

from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.value_model import GPValueModel
from mgral_core.wasserstein import DistanceMethod, build_index, distances_to_records

EstimatorKind = Literal["knn", "gp"]
ESTIMATORS: tuple[str, ...] = ("knn", "gp")


def inverse_distance_estimate(distances: np.ndarray, values: np.ndarray, n_neighbors: int,
                              epsilon: float = 1e-9) -> float:
    """Weighted mean of the values of the n_neighbors nearest records, weights 1 / distance.

    A record at distance <= epsilon is an exact match and its value is returned as is (the first
    such record by position when several are). Ties in distance are broken by position.
    """
    if len(distances) == 0:
        raise ValueError("no records to estimate from")
    nearest = np.argsort(distances, kind="stable")[:max(1, n_neighbors)]  # (n,)
    if distances[nearest[0]] <= epsilon:
        return float(values[nearest[0]])
    weights = 1.0 / distances[nearest]  # (n,)
    return float(weights @ values[nearest] / weights.sum())


def fallback_threshold(pairwise: np.ndarray, rule: str) -> float:
    """The nearest-record distance above which a batch counts as far from the table.

    Args:
        pairwise: (R, R) symmetric record-to-record distances.
        rule: "mean_minus_std" (the paper: mean minus one standard deviation of the pairwise record
            distances), "quantile:q" (the q-quantile of those distances, 0 <= q <= 1) or "never".
            With fewer than two records there is no pairwise distance and the threshold is infinite.
    """
    if rule not in ("never", "mean_minus_std") and not rule.startswith("quantile:"):
        raise ValueError(f"unknown fallback rule {rule!r}; use 'mean_minus_std', 'quantile:q' or 'never'")
    if rule == "never" or len(pairwise) < 2:
        return float("inf")
    upper = pairwise[np.triu_indices(len(pairwise), k=1)]  # (R (R - 1) / 2,) each pair once
    if rule == "mean_minus_std":
        return float(upper.mean() - upper.std())
    try:
        q = float(rule.split(":", 1)[1])
    except ValueError:
        q = float("nan")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"fallback rule {rule!r}: the quantile must be a number in [0, 1]")
    return float(np.quantile(upper, q))


def fallback_record_id(batch_ids: np.ndarray) -> str:
    """A stable id for a fallback record: the same batch (in any order) always gets the same id."""
    digest = hashlib.sha1("\n".join(sorted(np.asarray(batch_ids).astype(str))).encode()).hexdigest()
    return f"fallback_{digest[:12]}"


class RewardEstimator:
    """Predicts the value of L ∪ B for a candidate batch B from a cycle's lookup table.

    Args:
        table: the cycle's records (at least one). Fallback records are added to this table, and
            written to its directory when it has one.
        embeddings_of: batch ids (k,) -> embeddings (k, D); needed only when `__call__` is given ids
            without their embeddings.
        method: "sliced" (default, fast) or "exact" Wasserstein distance; see mgral_core.wasserstein.
        estimator: "knn" (inverse-distance mean of the nearest records, the paper's) or "gp" (GP
            regression over every record, `mgral_core.value_model`; hyperparameters fitted by
            leave-one-out when the estimator is built and again after each fallback).
        n_neighbors: knn only: how many nearest records the estimate averages.
        n_projections, n_quantiles: sliced-distance resolution.
        seed: seeds the sliced projections; use one per cycle.
        fallback_rule: knn only: the distance threshold, see `fallback_threshold`.
        gp_fallback_std: gp only: fall back when the predictive standard deviation of the batch's value
            exceeds this share of the prior standard deviation (about 1 = nothing known; > 1 never).
        max_fallbacks: at most this many direct trainings over the estimator's life.
        direct_value: batch ids (k,) -> the value measured by really training; None disables fallback.
        epsilon: knn only: distances at or below it are exact matches.
        features_of: batch ids (k,) -> (k, F) the per-image representation the distances compare
            (records and queries alike); None compares the embeddings themselves.
    """

    def __init__(self, table: LookupTable, embeddings_of: Callable[[np.ndarray], np.ndarray] | None = None, *,
                 method: DistanceMethod = "sliced", estimator: EstimatorKind = "knn", n_neighbors: int = 3,
                 n_projections: int = 128, n_quantiles: int = 128, seed: int = 0,
                 fallback_rule: str = "mean_minus_std", gp_fallback_std: float = 0.8, max_fallbacks: int = 0,
                 direct_value: Callable[[np.ndarray], float] | None = None, epsilon: float = 1e-9,
                 features_of: Callable[[np.ndarray], np.ndarray] | None = None):
        if len(table) == 0:
            raise ValueError("the reward estimator needs at least one lookup-table record")
        if n_neighbors < 1 or max_fallbacks < 0:
            raise ValueError(f"need n_neighbors >= 1 and max_fallbacks >= 0, got {n_neighbors}, {max_fallbacks}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
        if not gp_fallback_std > 0:
            raise ValueError(f"gp_fallback_std must be > 0, got {gp_fallback_std}")
        self.table = table
        self.embeddings_of, self.features_of = embeddings_of, features_of
        self.method, self.estimator, self.n_neighbors, self.epsilon = method, estimator, n_neighbors, epsilon
        self.gp_fallback_std = gp_fallback_std
        self.max_fallbacks, self.direct_value = max_fallbacks, direct_value
        self.index = build_index([self._represent(r.batch_ids, r.embeddings) for r in table], method,
                                 n_projections=n_projections, n_quantiles=n_quantiles, seed=seed)
        self._values = table.values  # (R,)
        self._pairwise: np.ndarray | None = None
        self.fallback_rule = fallback_rule
        self.threshold = (float("inf") if fallback_rule == "never" or estimator == "gp"
                          else fallback_threshold(self.pairwise_distances(), fallback_rule))
        self.value_model = GPValueModel(self.pairwise_distances(), self._values) if estimator == "gp" else None
        self.queries = 0
        self.far_queries = 0  # queries the table did not cover (beyond the threshold, or too uncertain)
        self.fallbacks = 0  # of those, how many were trained directly

    def _represent(self, batch_ids: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """(k, F) float32, what the distances compare for a batch: its features, or its embeddings."""
        chosen = embeddings if self.features_of is None else self.features_of(np.asarray(batch_ids))
        return np.asarray(chosen, dtype=np.float32)

    @property
    def records(self) -> list[LookupRecord]:
        return self.table.records

    @property
    def reference_value(self) -> float:
        """Mean value of the random-batch records: the expected value of a random batch.

        Fallback records are excluded (their batches were chosen by the agent, not at random). When
        records say what their batch is (extras "kind", as a designed table's do), only those of kind
        "random" count, if there are any.
        """
        kept = [r for r in self.records if not r.is_fallback]
        if any("kind" in r.extras for r in kept):
            kept = [r for r in kept if r.extras.get("kind") == "random"] or kept
        return float(np.mean([r.value for r in kept] if kept else self._values))

    def pairwise_distances(self) -> np.ndarray:
        """(R, R) record-to-record distances under the estimator's method (cached)."""
        if self._pairwise is None:
            self._pairwise = self.index.pairwise()
        return self._pairwise

    def distances(self, representation: np.ndarray) -> np.ndarray:
        """(R,) distance from a batch's representation (k, F) to every record: its embeddings (k, D), or
        with `features_of` its features.

        Rounded to float32 first, as records store embeddings, so a batch equal to a record is an
        exact match whatever precision it arrives in.
        """
        return distances_to_records(np.asarray(representation, dtype=np.float32), self.index)

    def _estimate(self, distances: np.ndarray) -> tuple[float, bool]:
        """The estimate from (R,) distances, and whether the table covers the batch (no fallback needed)."""
        if self.value_model is not None:
            prediction = self.value_model.predict(distances)
            return prediction.mean, prediction.std_ratio <= self.gp_fallback_std
        estimate = inverse_distance_estimate(distances, self._values, self.n_neighbors, self.epsilon)
        return estimate, bool(distances.min() <= self.threshold)

    def estimate_only(self, batch_ids: np.ndarray, embeddings: np.ndarray) -> float:
        """Estimated value of L ∪ batch from the table alone: never trains, and not counted as a query."""
        return self.estimate_embeddings(self._represent(np.asarray(batch_ids), embeddings))

    def estimate_embeddings(self, representation: np.ndarray) -> float:
        """Estimated value of the batch with this representation (k, F) (see `distances`); never falls back."""
        return self._estimate(self.distances(representation))[0]

    def __call__(self, batch_ids: np.ndarray, embeddings: np.ndarray | None = None) -> float:
        """Estimated value of L ∪ batch; trains directly (fallback) when the table does not cover the batch.

        Args:
            batch_ids: (k,) image ids of the batch.
            embeddings: (k, D) their embeddings, rows aligned; looked up with `embeddings_of` if None.
        """
        batch_ids = np.asarray(batch_ids)
        if embeddings is None:
            if self.embeddings_of is None:
                raise ValueError("pass the batch's embeddings or give the estimator an embeddings_of")
            embeddings = self.embeddings_of(batch_ids)
        d = self.distances(self._represent(batch_ids, embeddings))  # (R,)
        self.queries += 1
        estimate, covered = self._estimate(d)
        if not covered:
            self.far_queries += 1
            if self.direct_value is not None and self.fallbacks < self.max_fallbacks:
                return self._fall_back(batch_ids, embeddings, d)
        return estimate

    def _fall_back(self, batch_ids: np.ndarray, embeddings: np.ndarray, distances: np.ndarray) -> float:
        self.fallbacks += 1
        value = float(self.direct_value(batch_ids))
        record = LookupRecord(fallback_record_id(batch_ids), batch_ids, embeddings, value,
                              {"fallback": True, "fallback_index": self.fallbacks})
        self.table.add(record)
        self.index = self.index.add(self._represent(record.batch_ids, record.embeddings))
        self._values = np.append(self._values, value)
        if self._pairwise is not None:  # the new record's distances to the others are the query's
            r = len(distances)
            grown = np.zeros((r + 1, r + 1))
            grown[:r, :r], grown[r, :r], grown[:r, r] = self._pairwise, distances, distances
            self._pairwise = grown
        if self.value_model is not None:
            self.value_model = GPValueModel(self.pairwise_distances(), self._values)
        return value

    def leave_one_out_estimates(self) -> np.ndarray:
        """(R,) each record's value estimated from all the other records (no fallback).

        gp: the closed-form leave-one-out means under the hyperparameters fitted on every record.
        """
        if self.value_model is not None:
            return self.value_model.leave_one_out()[0]
        pairwise = self.pairwise_distances()
        keep = ~np.eye(len(pairwise), dtype=bool)
        return np.array([inverse_distance_estimate(pairwise[i][keep[i]], self._values[keep[i]], self.n_neighbors,
                                                   self.epsilon) for i in range(len(pairwise))])

    def diagnostics(self) -> dict[str, float]:
        """Numbers worth logging once per cycle."""
        out = {"records": float(len(self.records)), "reference_value": self.reference_value,
               "threshold": self.threshold, "queries": float(self.queries), "far_queries": float(self.far_queries),
               "fallbacks": float(self.fallbacks), "loo_spearman": leave_one_out_spearman(self)}
        if self.value_model is not None:
            h = self.value_model.hyperparameters
            out.update({"gp_lengthscale": h.lengthscale, "gp_noise_ratio": h.noise_ratio,
                        "gp_prior_std": self.value_model.prior_std, "gp_fallback_std": self.gp_fallback_std})
        return out


def leave_one_out_spearman(source: LookupTable | RewardEstimator, **estimator_kwargs) -> float:
    """Spearman correlation between each record's value and its estimate from the other records.

    Args:
        source: a table (an estimator is built from it with `estimator_kwargs`, fallback off) or an
            estimator (its own distances and settings are used).

    Returns:
        The correlation, or NaN with fewer than three records or when values or estimates are constant.
    """
    estimator = source if isinstance(source, RewardEstimator) else RewardEstimator(
        source, **{**estimator_kwargs, "fallback_rule": "never", "direct_value": None})
    values = estimator.table.values
    if len(values) < 3:
        return float("nan")
    estimates = estimator.leave_one_out_estimates()
    if np.ptp(values) == 0 or np.ptp(estimates) == 0:
        return float("nan")
    return float(spearmanr(values, estimates).statistic)


class ExactValueEstimator(RewardEstimator):
    """A reward that is the batch's value itself, computed for every batch, where that is cheap (`reward.estimator:
    exact`): a value read from detections (`mgral_core.detections.DetectionValue`) costs microseconds, so
    the agent need not learn it from records. The paper's direct training without the table in between.

    The table still gives the random-batch reference (the agent's first baseline) and the diagnostics;
    `estimate_only` and calls return `value_of(batch ids)`, never an estimate and never a fallback.

    Args:
        table: the cycle's records, as for RewardEstimator.
        value_of: batch ids (k,) -> the batch's value, as the records' values were computed.
        **options: RewardEstimator's other keyword arguments (distances for the diagnostics).
    """

    def __init__(self, table: LookupTable, value_of: Callable[[np.ndarray], float], **options):
        options = {**options, "estimator": "knn", "fallback_rule": "never", "direct_value": None, "max_fallbacks": 0}
        super().__init__(table, **options)
        self.value_of = value_of

    def estimate_only(self, batch_ids: np.ndarray, embeddings: np.ndarray) -> float:
        return float(self.value_of(np.asarray(batch_ids)))

    def __call__(self, batch_ids: np.ndarray, embeddings: np.ndarray | None = None) -> float:
        self.queries += 1
        return float(self.value_of(np.asarray(batch_ids)))

    def diagnostics(self) -> dict[str, float]:
        return {**super().diagnostics(), "exact": 1.0}
