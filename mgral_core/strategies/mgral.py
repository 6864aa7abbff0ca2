"""MGRAL as a selection strategy: train the sampling agent against a reward estimator, then take the top-k."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from mgral_core.agent import AgentConfig, TrainingHistory, checkpoint, select_top_k, train_agent
from mgral_core.reward import RewardEstimator
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.ranking import check_budget

EstimatorFactory = Callable[[PoolView, int], RewardEstimator]


class MgralStrategy:
    """The standard strategy signature `(pool, k, rng) -> ids` around agent training and top-k selection.

    Give either a ready `estimator` (its table must describe this pool's candidates) or an
    `estimator_factory(pool, k)` called once per selection. The agent's seed is drawn from `rng` at
    every call (replacing `agent_config.seed`), so the same rng state gives the same ids. After a call,
    `last_history`, `last_checkpoint` and `last_estimator` hold what is worth logging; this class does
    not log or write anything itself.

    Args:
        estimator: reward estimator for L ∪ B, queried with (batch ids, their embeddings).
        estimator_factory: builds the estimator from the pool view and the budget.
        agent_config: agent settings; None means AgentConfig().
        progress: passed to `train_agent` (called with (iteration, reward)).
    """

    def __init__(self, estimator: RewardEstimator | None = None, *, estimator_factory: EstimatorFactory | None = None,
                 agent_config: AgentConfig | None = None, progress: Callable[[int, float], None] | None = None):
        if (estimator is None) == (estimator_factory is None):
            raise ValueError("give exactly one of estimator and estimator_factory")
        self.estimator, self.estimator_factory = estimator, estimator_factory
        self.agent_config = agent_config if agent_config is not None else AgentConfig()
        self.progress = progress
        self.last_history: TrainingHistory | None = None
        self.last_checkpoint: dict | None = None
        self.last_estimator: RewardEstimator | None = None

    def __call__(self, pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
        check_budget(pool, k)
        if k == 0:
            return []
        estimator = self.estimator if self.estimator is not None else self.estimator_factory(pool, k)
        config = replace(self.agent_config, seed=int(rng.integers(0, 2**62)))
        ids, embeddings = pool.unlabeled_ids, np.asarray(pool.unlabeled_embeddings)  # (U,), (U, D)

        def reward(rows: np.ndarray) -> float:
            return estimator(ids[rows], embeddings[rows])

        agent, history = train_agent(embeddings, k, reward, config, estimator.reference_value, self.progress)
        chosen = select_top_k(agent, embeddings, k)  # (k,) rows, best first
        self.last_history, self.last_checkpoint, self.last_estimator = history, checkpoint(agent), estimator
        return [str(ids[i]) for i in chosen]
