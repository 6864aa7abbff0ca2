"""Uncertainty sampling: the k images whose detections the model is least sure about."""

from __future__ import annotations

import numpy as np

from mgral_core.detections import Detections
from mgral_core.strategies.base import PoolView, Strategy
from mgral_core.strategies.ranking import check_budget, top_k_by_score
from mgral_core.uncertainty import Reduction, entropy_scores, least_confidence_scores


def candidate_detections(pool: PoolView) -> list[Detections]:
    """The detections of every unlabeled id, in `pool.unlabeled_ids` order.

    Raises:
        ValueError: naming the first unlabeled ids that have no entry in `pool.detections`.
    """
    missing = [str(i) for i in pool.unlabeled_ids if str(i) not in pool.detections]
    if missing:
        raise ValueError(f"this strategy needs detections for every unlabeled image; {len(missing)} "
                         f"have none, e.g. {', '.join(missing[:5])}")
    return [pool.detections[str(i)] for i in pool.unlabeled_ids]


def _entropy_strategy(reduce: Reduction) -> Strategy:
    def strategy(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
        check_budget(pool, k)
        if k == 0:
            return []
        return top_k_by_score(pool, entropy_scores(candidate_detections(pool), reduce), k, rng)

    strategy.__name__ = strategy.__qualname__ = f"entropy_{reduce}"
    strategy.__doc__ = (f"The k unlabeled images of highest {reduce} detection entropy (see "
                        f"`mgral_core.uncertainty.entropy_scores`); ties broken by `rng`. Images without "
                        f"detections score 0. Ignores embeddings and the labeled set.")
    return strategy


entropy_mean = _entropy_strategy("mean")
entropy_sum = _entropy_strategy("sum")
entropy_max = _entropy_strategy("max")


def least_confidence_sampling(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """The k unlabeled images whose most confident detection is the weakest; ties broken by `rng`.

    Images without detections score 1.0 and come first (see
    `mgral_core.uncertainty.least_confidence_scores`). Ignores embeddings and the labeled set.
    """
    check_budget(pool, k)
    if k == 0:
        return []
    return top_k_by_score(pool, least_confidence_scores(candidate_detections(pool)), k, rng)
