"""One selection path for every strategy: build it for the cycle, call it on the pool view, keep its outputs.

`select_batch` is what the cycle's select task calls, whatever the strategy. A strategy that
declares `needs_lookup_table` (MGRAL) is built with a reward estimator over the cycle's table,
which the lookup-table subflow has filled before; baselines are built with nothing. The budget
is capped to the candidates here and nowhere else, and the strategy's rng is the cycle's
selection stream (`mgral_core.seeding`).

The one strategy that reads the oracle (`oracle_best_of_n`, `reads_oracle`) is built with a
scorer that trains the head proxy with the oracle's true labels of each candidate batch
(`record_values.true_label_record`); it is refused in a project labeled by people.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mgral_core.coverage import selection_coverage
from mgral_core.lookup_table import LookupTable
from mgral_core.reward import ExactValueEstimator, RewardEstimator, leave_one_out_spearman
from mgral_core.seeding import rng_for, seed_for
from mgral_core.shortlist import shortlist_size
from mgral_core.strategies import SelectionContext, get_strategy, needs_lookup_table, reads_oracle
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.mgral import MgralStrategy
from mgral_core.strategies.oracle import OracleBestOfN, ceiling_summary
from mgral_workspace import cycle_steps as steps
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import Params
from mgral_workspace.cycle_report import update_cycle_report
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.lookup_store import load_table
from mgral_workspace.plots import plot_agent_training
from mgral_workspace.project import load_project_info
from mgral_workspace.record_values import (
    cache_cycle_features,
    groups_in_use,
    labeled_coverage_gap,
    pool_detection_value,
    record_value,
    true_label_record,
)


class OracleRefusedError(ValueError):
    """A strategy that reads the oracle was asked to select in a project that has no oracle."""


def lookup_dir(project_dir: str | Path, cycle: int) -> Path:
    """Where the cycle's lookup table lives: cycles/cycle_NNN/lookup_table."""
    return steps.cycle_dir(project_dir, cycle) / "lookup_table"


def batch_representation(params: Params, inference, num_classes: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """What the reward estimator compares batches by, beyond the records' embeddings: None for the paper's
    256-d embedding (`reward.representation: embedding`), else the task-aware descriptors of the cycle's
    inference. Shared by the selection's estimator and the reward chain's, so both measure the same model."""
    reward = params.reward
    if reward.representation != "task_aware":
        return None
    return inference.task_aware_features(num_classes, reward.task_aware_pca_dims)


class LookupEstimatorFactory:
    """Builds MGRAL's reward estimator over the cycle's lookup table; a far batch is trained directly.

    After a call, `loo_spearman` holds the table's leave-one-out Spearman (before any fallback).
    """

    def __init__(self, project_dir: str | Path, params: Params, cycle: int, weights: str, inference_path: str):
        self.project_dir, self.params, self.cycle = project_dir, params, cycle
        self.weights, self.inference_path = weights, inference_path
        self.table_dir = lookup_dir(project_dir, cycle)
        self.loo_spearman: float | None = None

    def direct_value(self, ids: np.ndarray) -> float:
        """The fallback: train a record for `ids` now (numbered fallback_N in the table's work dir)."""
        fallback_id = f"fallback_{len(list(self.table_dir.glob('work/fallback_*')))}"
        (self.table_dir / "work" / fallback_id).mkdir(parents=True, exist_ok=True)
        return record_value(self.project_dir, self.params, self.table_dir, fallback_id, self.weights, list(ids),
                            self.inference_path)["value"]

    def __call__(self, pool: PoolView, k: int) -> RewardEstimator:
        inference = load_inference(self.inference_path)
        reward = self.params.reward
        features_of = batch_representation(params=self.params, inference=inference, num_classes=pool.num_classes)
        seed = seed_for(self.params.selection.seed, self.cycle, "estimator")
        table_value = self.params.lookup_table.value
        if reward.resolved_estimator(table_value) == "exact":  # the value itself for every batch; table: reference
            options = {name: option for name, option in reward.estimator_options(table_value).items()
                       if name not in ("estimator", "fallback_rule", "max_fallbacks")}
            estimator = ExactValueEstimator(
                load_table(self.table_dir), pool_detection_value(self.project_dir, self.params, self.inference_path),
                embeddings_of=lambda ids: inference.subset(ids).embeddings, seed=seed, features_of=features_of,
                **options)
        else:
            estimator = RewardEstimator(load_table(self.table_dir), lambda ids: inference.subset(ids).embeddings,
                                        seed=seed, direct_value=self.direct_value, features_of=features_of,
                                        **reward.estimator_options(table_value))
        self.loo_spearman = leave_one_out_spearman(estimator)
        return estimator


def ceiling_dir(project_dir: str | Path, cycle: int) -> Path:
    """Where the oracle ceiling keeps a cycle's head features and scored candidates: cycles/cycle_NNN/oracle_ceiling."""
    return steps.cycle_dir(project_dir, cycle) / "oracle_ceiling"


def check_strategy_allowed(project_dir: str | Path, strategy: str) -> None:
    """Refuse a strategy that reads the oracle in a project labeled by people (called before any training).

    Raises:
        OracleRefusedError: naming the project and the strategy, and what to run instead.
    """
    if reads_oracle(strategy) and not load_project_info(project_dir).simulate:
        raise OracleRefusedError(
            f"{project_dir}: strategy {strategy!r} is a simulation-only upper bound: it picks batches by training with "
            "the oracle's hidden labels, and this project is labeled by people (it has no oracle). Use it in a "
            "simulation project (mgral init --simulate / --builtin) or the benchmark; choose another strategy here")


class TrueLabelScorer:
    """The ceiling's scorer: the head-proxy value of L ∪ B with the oracle's labels of B, per candidate batch.

    The cycle's head features are cached once in `ceiling_dir`; each value is written to
    `<ceiling_dir>/values/<sha of the sorted ids>.json` as soon as it is known, so an interrupted
    selection scores only the missing candidates when it resumes. Batches are scored on
    `max_workers` threads (the lookup table's local runner setting, MGRAL_MAX_WORKERS overrides).
    """

    def __init__(self, project_dir: str | Path, params: Params, cycle: int, weights: str):
        self.project_dir, self.params, self.weights = project_dir, params, weights
        self.table_dir = ceiling_dir(project_dir, cycle)
        self.max_workers = int(os.environ.get("MGRAL_MAX_WORKERS", params.lookup_table.max_workers))

    def value(self, batch: Sequence[str]) -> float:
        key = hashlib.sha256("\n".join(sorted(map(str, batch))).encode()).hexdigest()[:20]
        path = self.table_dir / "values" / f"{key}.json"
        if path.exists():
            return float(json.loads(path.read_text())["value"])
        result = true_label_record(self.project_dir, self.params, self.table_dir, self.weights, list(batch))
        write_json_atomic(path, {**result, "batch_ids": sorted(map(str, batch))})
        return float(result["value"])

    def __call__(self, batches: Sequence[Sequence[str]]) -> list[float]:
        cache_cycle_features(self.project_dir, self.params, self.weights, self.table_dir)
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(batches)))) as pool:
            return list(pool.map(self.value, batches))


def selection_context(project_dir: str | Path, params: Params, cycle: int, strategy: str, weights: str,
                      inference_path: str, progress: Callable[[int, float], None] | None = None) -> SelectionContext:
    """What the cycle hands the strategy `strategy` to be built with (nothing for a baseline).

    Raises:
        OracleRefusedError: for a strategy that reads the oracle in a project labeled by people.
    """
    check_strategy_allowed(project_dir, strategy)
    if reads_oracle(strategy):
        return SelectionContext(oracle_scorer=TrueLabelScorer(project_dir, params, cycle, weights),
                                oracle=params.oracle.to_settings())
    if not needs_lookup_table(strategy):
        return SelectionContext()
    return SelectionContext(estimator_factory=LookupEstimatorFactory(project_dir, params, cycle, weights,
                                                                     inference_path),
                            agent=params.agent.to_agent_settings(), progress=progress)


def select_batch(project_dir: str | Path, params: Params, inference_path: str, cycle: int, strategy: str,
                 budget: int, weights: str, progress: Callable[[int, float], None] | None = None
                 ) -> tuple[list[str], dict]:
    """The cycle's batch: min(budget, candidates) ids chosen by `strategy`, saved as selection.json.

    Returns (ids, outputs): outputs has "metrics", "series" ({name: values by step}) and
    "artifacts" (paths) of what the strategy left to log, and "warnings" (also in the cycle report);
    empty for a selection already made by an interrupted run (which is returned as it was).
    """
    check_strategy_allowed(project_dir, strategy)
    cached = steps.load_selection(project_dir, cycle)
    if cached is not None:
        return cached, {"metrics": {}, "series": {}, "artifacts": [], "warnings": []}
    view = steps.pool_view(project_dir, Path(inference_path))
    k = min(budget, len(view.unlabeled_ids))
    context = selection_context(project_dir, params, cycle, strategy, weights, inference_path, progress)
    chosen = get_strategy(strategy, context)
    ids = chosen(view, k, rng_for(params.selection.seed, cycle, "select"))
    outputs = {"metrics": {}, "series": {}, "artifacts": []}
    if isinstance(chosen, MgralStrategy):
        outputs = save_mgral_outputs(project_dir, cycle, chosen, context.estimator_factory, len(view.unlabeled_ids),
                                     params.agent.shortlist)
    elif isinstance(chosen, OracleBestOfN) and chosen.last_candidates:
        outputs = save_ceiling_outputs(project_dir, cycle, chosen)
    steps.save_selection(project_dir, cycle, ids, strategy)
    coverage, warnings = coverage_metrics(project_dir, params, cycle, view, ids, strategy)
    outputs["metrics"].update(coverage)
    return ids, {**outputs, "warnings": warnings}


def coverage_metrics(project_dir: str | Path, params: Params, cycle: int, view: PoolView, ids: Sequence[str],
                     strategy: str) -> tuple[dict, list[str]]:
    """({"batch_cluster_gap", "labeled_cluster_gap", "coverage_warning"}, warnings): how far the batch's and the
    labeled set's (with the batch) mix of images is from the pool's (`mgral_core.coverage`;
    `selection.coverage_clusters` k-means clusters of the embeddings, 0 = not measured: ({}, [])). Above
    `selection.coverage_warn` a warning naming the clusters the labeled set lacks goes into the cycle report
    and the list, and "coverage_warning" is 1."""
    s = params.selection
    if s.coverage_clusters == 0 or not len(ids):
        return {}, []
    row = {image: r for r, image in enumerate(view.unlabeled_ids.tolist())}
    coverage = selection_coverage(view.labeled_embeddings, view.unlabeled_embeddings,
                                  np.array([row[str(i)] for i in ids], np.int64), s.coverage_clusters,
                                  seed_for(s.seed, cycle, "coverage"))
    metrics = {"batch_cluster_gap": coverage.batch_gap, "labeled_cluster_gap": coverage.labeled_gap,
               "coverage_warning": 0.0}
    if coverage.labeled_gap <= s.coverage_warn:
        return metrics, []
    low = coverage.under_represented()
    lacking = (f"clusters {', '.join(map(str, low))} hold {coverage.pool_share[low].sum():.0%} of the pool but "
               f"{coverage.labeled_share[low].sum():.0%} of the labeled images; " if low else "")
    t, mgral_class_gain = params.lookup_table, strategy == "mgral" and params.lookup_table.value == "class_gain"
    hint = ""
    if mgral_class_gain and t.class_gain_groups == 1:
        hint = ("; MGRAL's class gain per group (lookup_table.class_gain_groups: 16) values the kinds of image the "
                "labeled set lacks")
    elif mgral_class_gain and t.class_gain_groups_on == "coverage_warning":
        hint = (f"; MGRAL values per group of images (lookup_table.class_gain_groups: {t.class_gain_groups}) in "
                "the cycles whose labeled set starts this far from the pool's mix, measured again on that "
                "cycle's embeddings")
    warning = (f"cycle {cycle}: the labeled set's mix of images is far from the pool's (total variation "
               f"{coverage.labeled_gap:.2f} over {len(coverage.pool_share)} clusters of the embeddings, above "
               f"selection.coverage_warn {s.coverage_warn}; random sampling stays near 0.05): {lacking}the detector "
               f"may do worse on the kinds of image the batches leave out (docs/method.md, 'Coverage'){hint}")
    update_cycle_report(project_dir, cycle, warnings=[warning])
    return {**metrics, "coverage_warning": 1.0}, [warning]


def save_mgral_outputs(project_dir: str | Path, cycle: int, strategy: MgralStrategy,
                       factory: LookupEstimatorFactory, candidates: int, shortlist: int) -> dict:
    """Write the agent checkpoint, the table as CSV, the reward history and its plot, mgral_summary.json."""
    out = steps.cycle_dir(project_dir, cycle)
    history, estimator = strategy.last_history, strategy.last_estimator
    torch.save(strategy.last_checkpoint, out / "agent.pt")
    frame = LookupTable(estimator.records).to_frame()
    frame.to_csv(out / "lookup_table.csv", index=False)
    (out / "agent_history.json").write_text(json.dumps({"rewards": history.rewards, "baselines": history.baselines}))
    png = plot_agent_training(history.rewards, history.baselines, estimator.reference_value,
                              out / "agent_training.png")
    diagnostics_file = factory.table_dir / "diagnostics.json"
    diagnostics = json.loads(diagnostics_file.read_text()) if diagnostics_file.exists() else {}
    snr = {f"lookup_{name}": diagnostics[name] for name in ("repeatability", "fidelity", "seed_noise_std",
                                                            "between_batch_std") if diagnostics.get(name) is not None}
    metrics = {**snr, "lookup_loo_spearman": factory.loo_spearman, "lookup_fallbacks": estimator.fallbacks,
               "lookup_far_queries": estimator.far_queries, "lookup_records": len(estimator.records),
               "lookup_value_mean": float(frame["value"].mean()), "lookup_value_std": float(frame["value"].std()),
               "lookup_reference_value": float(estimator.reference_value),
               "agent_final_reward": float(np.mean(history.rewards[-20:])),
               "reward_exact": float(isinstance(estimator, ExactValueEstimator)),
               "agent_candidates_read": shortlist_size(candidates, shortlist),
               "agent_chunks": strategy.last_checkpoint["config"]["chunks"]}
    if history.best_reward is not None:  # the best reward of a batch drawn in training
        metrics["agent_best_drawn_reward"] = float(history.best_reward)
    if strategy.last_final_choice is not None:  # agent.final_choice best_estimate / best_sampled: what was compared
        choice = strategy.last_final_choice
        metrics.update({"final_choice_from_record": float(choice["source"] not in ("agent", "sampled")),
                        "final_choice_from_sampled": float(choice["source"] == "sampled"),
                        "final_choice_agent_estimate": choice["agent_estimate"],
                        "final_choice_estimate": choice["chosen_estimate"]})
    if estimator.value_model is not None:  # reward.estimator gp: the fitted model after any fallback
        h = estimator.value_model.hyperparameters
        metrics.update({"lookup_gp_lengthscale": h.lengthscale, "lookup_gp_noise_ratio": h.noise_ratio,
                        "lookup_gp_prior_std": estimator.value_model.prior_std})
    t = factory.params.lookup_table
    if t.value == "class_gain" and t.class_gain_groups > 1:  # which class gain the cycle used (G = 1: per class)
        inference = load_inference(factory.inference_path)
        metrics["class_gain_groups_used"] = groups_in_use(factory.project_dir, factory.params, inference)
        if t.class_gain_groups_on == "coverage_warning":
            metrics["labeled_cluster_gap_before"] = labeled_coverage_gap(factory.project_dir, factory.params,
                                                                         inference)
    write_json_atomic(out / "mgral_summary.json", metrics)  # the same figures, for reports without MLflow
    artifacts = [out / "agent.pt", out / "lookup_table.csv", png, *([diagnostics_file] if diagnostics else [])]
    return {"metrics": metrics, "series": {"agent_reward": history.rewards, "agent_baseline": history.baselines},
            "artifacts": [str(p) for p in artifacts]}


def save_ceiling_outputs(project_dir: str | Path, cycle: int, strategy: OracleBestOfN) -> dict:
    """Write every scored candidate and the ceiling's figures to `oracle_ceiling/candidates.json`.

    The figures (`ceiling_summary`: chosen value and kind, best and mean per kind, chosen minus the
    mean random candidate) are true-label head-proxy values, a diagnostic of this cycle's headroom.
    """
    summary = ceiling_summary(strategy.last_candidates, strategy.last_choice)
    path = ceiling_dir(project_dir, cycle) / "candidates.json"
    write_json_atomic(path, {"cycle": cycle, "upper_bound": "reads the oracle's true labels (simulation only)",
                             "chosen": strategy.last_choice, **summary,
                             "candidates": [{"kind": c.kind, "source": c.source, "value": c.value,
                                             "same_as": c.same_as, "ids": c.ids} for c in strategy.last_candidates]})
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"metrics": metrics, "series": {}, "artifacts": [str(path)]}
