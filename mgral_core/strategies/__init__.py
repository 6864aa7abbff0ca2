"""Selection strategies by name; every one is called as strategy(pool, k, rng) and returns k image ids.

Baselines are plain functions. A model-based strategy (MGRAL) is a class built once per
selection from a `SelectionContext` (what it needs beside the pool view: a reward estimator
factory, agent settings) and then called like the rest. Adding one is a module plus one line in
STRATEGIES; a class that sets `needs_lookup_table = True` makes the cycle build the lookup table
before it selects.
"""

from __future__ import annotations

from mgral_core.strategies.base import PoolView, SelectionContext, Strategy
from mgral_core.strategies.cdal import cdal
from mgral_core.strategies.coreset import coreset
from mgral_core.strategies.ebal import ebal
from mgral_core.strategies.mgral import MgralStrategy
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
MODEL_STRATEGIES: dict[str, type] = {  # built per selection with `from_context(SelectionContext)`
    "mgral": MgralStrategy,
}
STRATEGY_NAMES = (*MODEL_STRATEGIES, *BASELINE_STRATEGIES)


def needs_lookup_table(name: str) -> bool:
    """True when the strategy `name` reads a per-cycle lookup table (the cycle builds it first)."""
    _check_known(name)
    return bool(getattr(MODEL_STRATEGIES.get(name), "needs_lookup_table", False))


def get_strategy(name: str, context: SelectionContext | None = None) -> Strategy:
    """The strategy registered under `name`, ready to call as strategy(pool, k, rng).

    Baselines ignore `context`; model strategies are built from it.

    Raises:
        ValueError: for an unknown name (listing the known ones), or a model strategy whose
            context lacks what it needs.
    """
    _check_known(name)
    if name in BASELINE_STRATEGIES:
        return BASELINE_STRATEGIES[name]
    return MODEL_STRATEGIES[name].from_context(context or SelectionContext())


def _check_known(name: str) -> None:
    if name not in BASELINE_STRATEGIES and name not in MODEL_STRATEGIES:
        known = ", ".join(sorted(STRATEGY_NAMES))
        raise ValueError(f"unknown strategy {name!r}; known strategies: {known}")


__all__ = ["BASELINE_STRATEGIES", "MODEL_STRATEGIES", "STRATEGY_NAMES", "PoolView", "SelectionContext", "Strategy",
           "get_strategy", "needs_lookup_table"]
