"""MGRAL as a selection strategy: train the sampling agent against a reward estimator, then take the top-k."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from mgral_core.agent import (
    AgentConfig,
    SamplingAgent,
    TrainingHistory,
    checkpoint,
    config_for_pool,
    select_top_k,
    train_agent,
)
from mgral_core.reward import RewardEstimator
from mgral_core.shortlist import SHORTLIST_METHODS, check_shortlist_size, shortlist_rows, shortlist_size
from mgral_core.strategies.base import PoolView, SelectionContext
from mgral_core.strategies.cdal import cdal
from mgral_core.strategies.ranking import check_budget

EstimatorFactory = Callable[[PoolView, int], RewardEstimator]


@dataclass(frozen=True)
class AgentSettings:
    """How MGRAL trains its agent: the agent's config (its seed is replaced at every selection by a
    draw from the strategy's rng) and the hierarchical / large-pool settings of `train_and_select`."""

    config: AgentConfig = field(default_factory=AgentConfig)
    shortlist: int = 0
    shortlist_method: str = "kmeans"
    large_pool: int = 0
    final_choice: str = "top_k"


FINAL_CHOICES = ("top_k", "best_estimate", "best_sampled")
MGRAL_SHORTLIST_METHODS = (*SHORTLIST_METHODS, "cdal")
_CDAL_SHORTLIST_STREAM = 0x5C  # apart from the kmeans/random shortlist streams of mgral_core.shortlist


def cdal_shortlist(pool: PoolView, k: int, size: int, seed: int) -> np.ndarray:
    """Sorted rows (S,) of `pool.unlabeled_ids`: CDAL's first S picks (`shortlist_method: cdal`); all rows when
    the shortlist is off (S = 0 or S >= U).

    k-center greedy on the contextual diversity of the detections (`mgral_core.strategies.cdal`) spreads the S
    candidates over the detector's class-probability space; the agent then chooses k of them by its reward.
    S = k is CDAL's batch (when the labeled images' detections are in the view; the cycle's view holds the
    unlabeled ones only, and then CDAL's first center is drawn from `seed`), S = U plain MGRAL: the shortlist
    keeps CDAL's coverage of every kind of image and lets the reward (e.g. the class gain) choose within it.
    Costs S k-center picks, each one (U, C) matrix-vector product.
    """
    check_shortlist_size(k, size)
    u = len(pool.unlabeled_ids)
    if shortlist_size(u, size) == u:
        return np.arange(u)
    position = {str(image): row for row, image in enumerate(pool.unlabeled_ids)}
    picked = cdal(pool, size, np.random.default_rng([seed, _CDAL_SHORTLIST_STREAM]))
    return np.sort(np.array([position[image] for image in picked], np.int64))


def best_sampled_batch(estimator: RewardEstimator, ids: np.ndarray, embeddings: np.ndarray, agent_rows: np.ndarray,
                       history: TrainingHistory) -> tuple[np.ndarray, dict]:
    """The agent's top-k or the best batch it drew while training, whichever the reward rates higher
    (`final_choice: best_sampled`), as rows of `ids`, and what was compared.

    The top-k of a trained policy is its mode, a batch it may never have drawn: under a reward computed
    for every batch (`reward.estimator: exact`) the best drawn batch is a measured value, the top-k
    only a hope. The top-k is rated by the table alone (no fallback training).
    """
    agent_estimate = estimator.estimate_only(ids[agent_rows], embeddings[agent_rows])
    if history.best_rows is None or not history.best_reward > agent_estimate:
        return agent_rows, {"source": "agent", "agent_estimate": agent_estimate, "chosen_estimate": agent_estimate}
    return np.asarray(history.best_rows), {"source": "sampled", "agent_estimate": agent_estimate,
                                          "chosen_estimate": float(history.best_reward)}


def best_estimated_batch(estimator: RewardEstimator, ids: np.ndarray, embeddings: np.ndarray,
                         agent_rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """The batch the estimator rates highest among the agent's top-k and the table's records of the same size
    whose images are all still candidates (`final_choice: best_estimate`), as rows of `ids`, and what was
    compared. Estimates come from the table alone (no fallback training).

    Under the k-NN estimator a record's estimate is its own value, the peak of the reward around it, so
    this picks the best record whenever the agent has not found a batch rated above it.
    """
    position = {str(image): row for row, image in enumerate(ids)}
    agent_estimate = estimator.estimate_only(ids[agent_rows], embeddings[agent_rows])
    best_rows, best_estimate, source = agent_rows, agent_estimate, "agent"
    for record in estimator.records:
        rows = [position.get(str(image)) for image in record.batch_ids]
        if len(rows) != len(agent_rows) or any(row is None for row in rows):
            continue
        rows = np.asarray(rows)
        value = estimator.estimate_only(ids[rows], embeddings[rows])
        if value > best_estimate:
            best_rows, best_estimate, source = rows, value, record.record_id
    return best_rows, {"source": source, "agent_estimate": agent_estimate, "chosen_estimate": best_estimate}


def train_and_select(embeddings: np.ndarray, k: int, reward: Callable[[np.ndarray], float], config: AgentConfig,
                     initial_baseline: float, *, shortlist: int = 0, shortlist_method: str = "kmeans",
                     large_pool: int = 0, progress: Callable[[int, float], None] | None = None,
                     imitate: np.ndarray | None = None, rows: np.ndarray | None = None
                     ) -> tuple[np.ndarray, SamplingAgent, TrainingHistory]:
    """The agent's part of one MGRAL selection: optional shortlist, training, top-k.

    With `shortlist` = S > 0 the agent is trained on and scores only the S rows of
    `shortlist_rows(embeddings, k, S, config.seed, shortlist_method)` (hierarchical selection);
    `config_for_pool(config, rows read, large_pool)` then picks the large-pool settings if needed.
    The agent returned carries the config it really ran with (`agent.config`): checkpoint that one.

    Args:
        embeddings: (U, D) the unlabeled pool.
        k: the budget.
        reward: pool rows (k,) of `embeddings` -> the estimated value of L ∪ batch.
        config: agent settings; its seed also fixes the shortlist.
        initial_baseline: mAP_ref before the first iteration.
        shortlist, shortlist_method, large_pool: see AgentParams (0 = off for both).
        progress: passed to `train_agent`.
        imitate: pool rows of a batch the agent imitates first (config.imitation_steps); rows outside the
            shortlist are left out.
        rows: the candidates' pool rows (S,), sorted, when the caller shortlisted them itself (`cdal_shortlist`);
            then `shortlist` and `shortlist_method` are not used.

    Returns:
        The chosen pool rows (k,) best first, the trained agent and its history (its `best_rows` as pool rows).
    """
    embeddings = np.asarray(embeddings)
    if rows is None:
        rows = shortlist_rows(embeddings, k, shortlist, config.seed, shortlist_method)  # (S,) pool rows
    rows = np.asarray(rows, np.int64)
    if len(rows) < k:
        raise ValueError(f"a shortlist of {len(rows)} candidates cannot hold a batch of k={k}")
    candidates = embeddings if len(rows) == len(embeddings) else embeddings[rows]  # (S, D)
    config = config_for_pool(config, len(rows), large_pool)
    if imitate is not None:  # pool rows -> positions among the candidates
        imitate = np.flatnonzero(np.isin(rows, np.asarray(imitate)))
    agent, history = train_agent(candidates, k, lambda picked: reward(rows[picked]), config, initial_baseline,
                                 progress, imitate)
    if history.best_rows is not None:  # candidate positions -> pool rows, like the top-k
        history.best_rows = rows[history.best_rows]
    return rows[select_top_k(agent, candidates, k)], agent, history


def best_record_rows(estimator: RewardEstimator, ids: np.ndarray) -> np.ndarray | None:
    """Rows of `ids` holding the batch of the estimator's highest-valued record (its images still in `ids`),
    or None without records. The imitation start of AgentConfig.imitation_steps."""
    if not estimator.records:
        return None
    best = max(estimator.records, key=lambda record: record.value)
    return np.flatnonzero(np.isin(ids, best.batch_ids))


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
        shortlist, shortlist_method, large_pool: hierarchical selection and large-pool settings, see
            `train_and_select`; off by default here.
    """

    needs_lookup_table = True  # the cycle builds the lookup table before calling this strategy

    @classmethod
    def from_context(cls, context: SelectionContext) -> MgralStrategy:
        """MGRAL as the cycle builds it: the context's estimator factory and agent settings.

        Raises:
            ValueError: when the context has no estimator factory (no lookup table to read).
        """
        if context.estimator_factory is None:
            raise ValueError("strategy 'mgral' needs a per-cycle lookup table: build it with a SelectionContext "
                             "whose estimator_factory reads the cycle's table (the cycle flow does this)")
        agent = context.agent if context.agent is not None else AgentSettings()
        return cls(estimator_factory=context.estimator_factory, agent_config=agent.config, progress=context.progress,
                   shortlist=agent.shortlist, shortlist_method=agent.shortlist_method, large_pool=agent.large_pool,
                   final_choice=agent.final_choice)

    def __init__(self, estimator: RewardEstimator | None = None, *, estimator_factory: EstimatorFactory | None = None,
                 agent_config: AgentConfig | None = None, progress: Callable[[int, float], None] | None = None,
                 shortlist: int = 0, shortlist_method: str = "kmeans", large_pool: int = 0,
                 final_choice: str = "top_k"):
        if (estimator is None) == (estimator_factory is None):
            raise ValueError("give exactly one of estimator and estimator_factory")
        if shortlist_method not in MGRAL_SHORTLIST_METHODS:
            raise ValueError(f"unknown shortlist_method {shortlist_method!r}; use one of "
                             f"{', '.join(MGRAL_SHORTLIST_METHODS)}")
        if final_choice not in FINAL_CHOICES:
            raise ValueError(f"unknown final_choice {final_choice!r}; use one of {', '.join(FINAL_CHOICES)}")
        self.final_choice = final_choice
        self.last_final_choice: dict | None = None
        self.estimator, self.estimator_factory = estimator, estimator_factory
        self.agent_config = agent_config if agent_config is not None else AgentConfig()
        self.progress = progress
        self.shortlist, self.shortlist_method, self.large_pool = shortlist, shortlist_method, large_pool
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

        rows = cdal_shortlist(pool, k, self.shortlist, config.seed) if self.shortlist_method == "cdal" else None
        chosen, agent, history = train_and_select(
            embeddings, k, reward, config, estimator.reference_value, shortlist=self.shortlist,
            shortlist_method=self.shortlist_method, large_pool=self.large_pool, progress=self.progress,
            imitate=best_record_rows(estimator, ids) if config.imitation_steps > 0 else None, rows=rows)
        self.last_history, self.last_checkpoint, self.last_estimator = history, checkpoint(agent), estimator
        if self.final_choice == "best_estimate":
            chosen, self.last_final_choice = best_estimated_batch(estimator, ids, embeddings, chosen)
        elif self.final_choice == "best_sampled":
            chosen, self.last_final_choice = best_sampled_batch(estimator, ids, embeddings, chosen, history)
        return [str(ids[i]) for i in chosen]
