"""Selection strategies by name; every one is called as strategy(pool, k, rng) and returns k image ids."""

from __future__ import annotations

from mgral_core.strategies.base import PoolView, Strategy
from mgral_core.strategies.cdal import cdal
from mgral_core.strategies.coreset import coreset
from mgral_core.strategies.ebal import ebal
from mgral_core.strategies.random_sampling import random_sampling
from mgral_core.strategies.uncertainty_sampling import (
    entropy_max,
    entropy_mean,
    entropy_sum,
    least_confidence_sampling,
)

BASELINE_STRATEGIES: dict[str, Strategy] = {
    "random": random_sampling,
    "entropy_mean": entropy_mean,
    "entropy_sum": entropy_sum,
    "entropy_max": entropy_max,
    "least_confidence": least_confidence_sampling,
    "coreset": coreset,
    "cdal": cdal,
    "ebal": ebal,
}
MODEL_STRATEGIES = ("mgral",)  # need a per-cycle lookup table; run by the flow, see tasks/mgral_tasks.py
STRATEGY_NAMES = (*MODEL_STRATEGIES, *BASELINE_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The baseline strategy registered under `name`.

    Does not build model strategies (MGRAL): the flow constructs those with their estimator.

    Raises:
        ValueError: for an unknown name or a model strategy, listing the known names.
    """
    if name in BASELINE_STRATEGIES:
        return BASELINE_STRATEGIES[name]
    known = ", ".join(sorted(BASELINE_STRATEGIES) + list(MODEL_STRATEGIES))
    if name in MODEL_STRATEGIES:
        raise ValueError(f"strategy {name!r} needs a per-cycle lookup table and is run by the flow "
                         f"(tasks/mgral_tasks.py), not through get_strategy; known strategies: {known}")
    raise ValueError(f"unknown strategy {name!r}; known strategies: {known}")


__all__ = ["BASELINE_STRATEGIES", "MODEL_STRATEGIES", "PoolView", "Strategy", "get_strategy"]
