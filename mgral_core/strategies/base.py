"""The one interface every selection strategy implements, and the view of the pool it gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mgral_core.detections import Detections


@dataclass(frozen=True)
class PoolView:
    """What a strategy may see of the pool: ids, embeddings and model outputs, never labels.

    Attributes:
        unlabeled_ids: (U,) stable image ids of the candidates, in a fixed order.
        unlabeled_embeddings: (U, D) one embedding per candidate, rows aligned to unlabeled_ids.
        labeled_ids: (L,) ids already labeled.
        labeled_embeddings: (L, D) rows aligned to labeled_ids.
        detections: current detector output per unlabeled id (with class_probs), or empty
            where the strategy does not need it.
        num_classes: number of object classes of the project.
    """

    unlabeled_ids: np.ndarray
    unlabeled_embeddings: np.ndarray
    labeled_ids: np.ndarray
    labeled_embeddings: np.ndarray
    detections: Mapping[str, Detections] = field(default_factory=dict)
    num_classes: int = 1

    def __post_init__(self) -> None:
        if len(self.unlabeled_ids) != len(self.unlabeled_embeddings):
            raise ValueError(
                f"unlabeled_embeddings has {len(self.unlabeled_embeddings)} rows for "
                f"{len(self.unlabeled_ids)} unlabeled ids"
            )
        if len(self.labeled_ids) != len(self.labeled_embeddings):
            raise ValueError(
                f"labeled_embeddings has {len(self.labeled_embeddings)} rows for "
                f"{len(self.labeled_ids)} labeled ids"
            )


class Strategy(Protocol):
    """A selection strategy: k distinct unlabeled ids, deterministic for a given rng state."""

    def __call__(self, pool: PoolView, k: int, rng: np.random.Generator) -> list[str]: ...


@dataclass(frozen=True)
class SelectionContext:
    """What a model-based strategy is built with, beside the pool view it is later called on.

    Baselines need none of it. Attributes left None are simply not available; a strategy that
    needs one refuses to build without it.

    Attributes:
        estimator_factory: `(pool, k) -> RewardEstimator` over the cycle's lookup table (MGRAL).
        agent: the agent's settings (`mgral_core.strategies.mgral.AgentSettings`) for MGRAL.
        progress: called as progress(iteration, value) while a strategy trains, for progress bars.
        oracle_scorer: simulation only, for the `oracle_best_of_n` ceiling alone: maps candidate batches
            to the values of L ∪ B trained with the oracle's true labels
            (`mgral_core.strategies.oracle.OracleScorer`). The workspace sets it for that strategy
            only, and never in a project labeled by people.
        oracle: the ceiling's `OracleSettings` (None: the defaults).
    """

    estimator_factory: Callable[[PoolView, int], Any] | None = None
    agent: Any = None
    progress: Callable[[int, float], None] | None = None
    oracle_scorer: Callable[[Any], list[float]] | None = None
    oracle: Any = None
