"""Selection strategies by name; every one takes (pool: PoolView, k, rng) and returns k image ids."""

from __future__ import annotations

from mgral_core.strategies.base import PoolView, Strategy
from mgral_core.strategies.baselines import (
    coreset,
    entropy_max,
    entropy_mean,
    entropy_sum,
    least_confidence_sampling,
    random_sampling,
)

BASELINE_STRATEGIES: dict[str, Strategy] = {
    "random": random_sampling,
    "entropy_mean": entropy_mean,
    "entropy_sum": entropy_sum,
    "entropy_max": entropy_max,
    "least_confidence": least_confidence_sampling,
    "coreset": coreset,
}
MODEL_STRATEGIES = ("mgral",)  # need a per-cycle lookup table; run by the flow, see tasks/mgral_tasks.py


def get_strategy(name: str) -> Strategy:
    """A baseline strategy by name; raises ValueError listing the known names."""
    if name not in BASELINE_STRATEGIES:
        known = sorted(BASELINE_STRATEGIES) + list(MODEL_STRATEGIES)
        raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(known)}")
    return BASELINE_STRATEGIES[name]


__all__ = ["BASELINE_STRATEGIES", "PoolView", "Strategy", "get_strategy"]
