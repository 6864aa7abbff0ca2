"""Selection strategies by name; every one is called as strategy(pool, k, rng) and returns k image ids.

Baselines are plain functions. A model-based strategy (MGRAL) is a class built once per
selection from a `SelectionContext` (what it needs beside the pool view: a reward estimator
factory, agent settings) and then called like the rest. Adding one is a module plus one line in
STRATEGIES; a class that sets `needs_lookup_table = True` makes the cycle build the lookup table
before it selects.

One registered strategy is not a strategy a user could run: `oracle_best_of_n` reads the oracle's
hidden labels (`reads_oracle = True`). It is an upper-bound diagnostic for simulation only, refused
in real projects, and shown as `oracle_best_of_n (ceiling)` in every report (`display_name`).
"""

from __future__ import annotations

from mgral_core.strategies.base import PoolView, SelectionContext, Strategy
from mgral_core.strategies.cdal import cdal
from mgral_core.strategies.coreset import coreset
from mgral_core.strategies.ebal import ebal
from mgral_core.strategies.mgral import MgralStrategy
from mgral_core.strategies.oracle import OracleBestOfN
from mgral_core.strategies.random_sampling import random_sampling
from mgral_core.strategies.typiclust import typiclust
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
    "typiclust": typiclust,
}
MODEL_STRATEGIES: dict[str, type] = {  # built per selection with `from_context(SelectionContext)`
    "mgral": MgralStrategy,
    "oracle_best_of_n": OracleBestOfN,
}
STRATEGY_NAMES = (*MODEL_STRATEGIES, *BASELINE_STRATEGIES)
CEILING_SUFFIX = " (ceiling)"


def reads_oracle(name: str) -> bool:
    """True for a strategy that reads the oracle's hidden labels (simulation only; an upper bound)."""
    _check_known(name)
    return bool(getattr(MODEL_STRATEGIES.get(name), "reads_oracle", False))


def oracle_readers() -> tuple[str, ...]:
    """Names of every registered strategy that reads the oracle (today only 'oracle_best_of_n')."""
    return tuple(name for name in STRATEGY_NAMES if reads_oracle(name))


def base_name(spec: str) -> str:
    """The strategy a spec runs: 'mgral@agent.shortlist=200' -> 'mgral' (a name without overrides is itself)."""
    return spec.partition("@")[0]


def display_name(spec: str) -> str:
    """The name a report shows for a strategy spec: an oracle reader gets ' (ceiling)' appended.

    Takes specs with overrides ('oracle_best_of_n@oracle.candidates=8') and names that are not
    registered (returned unchanged), so old result tables still render.
    """
    name = base_name(spec)
    is_ceiling = name in STRATEGY_NAMES and reads_oracle(name)
    return spec + CEILING_SUFFIX if is_ceiling and not spec.endswith(CEILING_SUFFIX) else spec


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


__all__ = ["BASELINE_STRATEGIES", "CEILING_SUFFIX", "MODEL_STRATEGIES", "STRATEGY_NAMES", "PoolView",
           "SelectionContext", "Strategy", "base_name", "display_name", "get_strategy", "needs_lookup_table", "oracle_readers",
           "reads_oracle"]
