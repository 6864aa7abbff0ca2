"""The one selection path: the cycle's select step gives the same batch as before the house was rebuilt,
caps the budget, and is the path MGRAL takes too (built from the cycle's lookup table)."""

from pathlib import Path

import numpy as np
import pytest

from mgral_core.detections import Detections
from mgral_core.lookup_table import LookupRecord
from mgral_core.seeding import PURPOSES, rng_for, seed_for
from mgral_workspace import cycle_steps as steps
from mgral_workspace.config import load_params
from mgral_workspace.inference_cache import InferenceResult, load_inference, save_inference
from mgral_workspace.lookup_store import save_record
from mgral_workspace.pool import PoolState
from mgral_workspace.selection import LookupEstimatorFactory, lookup_dir, select_batch

# random's first-cycle batch on the tiny built-in project (seed 0, 60 pool images, 20 labeled), computed
# with the code before the core was split (commit b4e21b6): selection.seed 0, cycle 1.
PINNED_RANDOM = ["syn_000028", "syn_000054", "syn_000049", "syn_000017", "syn_000044", "syn_000014", "syn_000024",
                 "syn_000057"]


def fake_inference(project, cycle=1, dim=8):
    """Embeddings and empty detections for every pool image, as the cycle's inference step writes them."""
    ids = PoolState.load(project).ids("pool")
    embeddings = np.random.default_rng(5).normal(size=(len(ids), dim)).astype(np.float32)
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                       np.zeros((0, 8), np.float32))
    path = project / "cycles" / f"cycle_{cycle:03d}" / "pool_inference.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(save_inference(path, InferenceResult(ids, embeddings, [empty] * len(ids)))), ids, embeddings


def test_random_first_cycle_batch_is_pinned(tiny_project):
    inference, _, _ = fake_inference(tiny_project)
    params = load_params(tiny_project / "params.yaml")
    ids, outputs = select_batch(tiny_project, params, inference, 1, "random", 8, weights="unused")
    assert ids == PINNED_RANDOM
    assert outputs["series"] == {} and outputs["artifacts"] == []
    assert set(outputs["metrics"]) == {"batch_cluster_gap", "labeled_cluster_gap", "coverage_warning"}
    assert 0 <= outputs["metrics"]["labeled_cluster_gap"] <= 1


def test_a_labeled_set_far_from_the_pools_mix_is_warned_about_in_the_cycle_report(tiny_project):
    """Every strategy's selection is followed by the coverage gap; a batch of one kind of image warns."""
    from mgral_core.strategies.base import PoolView
    from mgral_workspace.cycle_report import load_cycle_report
    from mgral_workspace.selection import coverage_metrics

    params = load_params(tiny_project / "params.yaml", {"selection.coverage_clusters": 2})
    rng = np.random.default_rng(0)
    kind = np.repeat([5.0, -5.0], [150, 50])[:, None] * np.eye(4)[0]  # 75 % of one kind, 25 % of another
    embeddings = (kind + rng.normal(0, 0.3, (200, 4))).astype(np.float32)
    ids = np.array([f"img{i:03d}" for i in range(200)])
    view = PoolView(unlabeled_ids=ids[20:], unlabeled_embeddings=embeddings[20:],
                    labeled_ids=ids[:20], labeled_embeddings=embeddings[:20])  # L: the first kind only
    balanced, none = coverage_metrics(tiny_project, params, 4, view, [*ids[20:45], *ids[150:165]], "random")
    assert none == []  # L + B as the pool
    assert balanced["coverage_warning"] == 0.0 and balanced["labeled_cluster_gap"] == pytest.approx(0, abs=1e-9)
    assert balanced["batch_cluster_gap"] == pytest.approx(15 / 40 - 0.25)
    assert load_cycle_report(tiny_project, 4)["warnings"] == []
    skewed, returned = coverage_metrics(tiny_project, params, 5, view, ids[20:60].tolist(), "mgral")  # more of kind 1
    assert skewed["coverage_warning"] == 1.0 and skewed["labeled_cluster_gap"] == pytest.approx(0.25)
    (warning,) = load_cycle_report(tiny_project, 5)["warnings"]
    assert returned == [warning]
    assert "total variation 0.25 over 2 clusters" in warning and "hold 25% of the pool but 0% of the labeled" in warning
    assert "lookup_table.class_gain_groups: 16" in warning  # what helps the default MGRAL
    coverage_metrics(tiny_project, params, 7, view, ids[20:60].tolist(), "entropy_sum")
    assert "class_gain_groups" not in load_cycle_report(tiny_project, 7)["warnings"][0]
    off = params.model_copy(update={"selection": params.selection.model_copy(update={"coverage_clusters": 0})})
    assert coverage_metrics(tiny_project, off, 6, view, ids[20:60].tolist(), "random") == ({}, [])
    switched = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(update={
        "class_gain_groups": 16, "class_gain_groups_on": "coverage_warning"})})
    _, (hint,) = coverage_metrics(tiny_project, switched, 8, view, ids[20:60].tolist(), "mgral")
    assert "values per group of images (lookup_table.class_gain_groups: 16) in the cycles whose labeled set" in hint


def test_budget_is_capped_and_a_made_selection_is_kept(tiny_project):
    inference, _, _ = fake_inference(tiny_project)
    params = load_params(tiny_project / "params.yaml")
    ids, _ = select_batch(tiny_project, params, inference, 1, "coreset", 500, weights="unused")
    assert sorted(ids) == sorted(PoolState.load(tiny_project).unlabeled_pool_ids.tolist())  # 40 of 40
    again, _ = select_batch(tiny_project, params, inference, 1, "random", 8, weights="unused")
    assert again == ids  # an interrupted cycle resumes with the batch it had chosen


def test_mgral_takes_the_same_path_and_reads_the_cycle_table(tiny_project):
    inference, pool_ids, embeddings = fake_inference(tiny_project)
    params = load_params(tiny_project / "params.yaml", {"agent.iterations": 4, "reward.fallback_rule": "never"})
    unlabeled = PoolState.load(tiny_project).unlabeled_pool_ids
    row = {image_id: i for i, image_id in enumerate(pool_ids)}
    rng = np.random.default_rng(1)
    for r in range(5):
        batch = rng.choice(unlabeled, 8, replace=False)
        save_record(lookup_dir(tiny_project, 1), LookupRecord(f"record_{r:03d}", batch,
                                                              embeddings[[row[i] for i in batch]], 0.1 + r / 100))
    ids, outputs = select_batch(tiny_project, params, inference, 1, "mgral", 8, weights="unused")
    assert len(set(ids)) == 8 and set(ids) <= set(unlabeled.tolist())
    assert outputs["metrics"]["lookup_records"] == 5 and len(outputs["series"]["agent_reward"]) == 4
    assert (tiny_project / "cycles" / "cycle_001" / "agent.pt").exists()


def test_seed_recipe_streams_are_distinct_and_repeatable():
    draws = {p: rng_for(3, 2, p).integers(0, 2**31, 4).tolist() for p in PURPOSES}
    assert len({tuple(v) for v in draws.values()}) == len(PURPOSES)
    assert rng_for(3, 2, "select").integers(0, 2**31, 4).tolist() == draws["select"]
    assert rng_for(3, 2, "select").integers(0, 9, 5).tolist() == np.random.default_rng([3, 2]).integers(0, 9, 5).tolist()
    assert seed_for(3, 2, "detector") != seed_for(3, 3, "detector")
    with pytest.raises(ValueError, match="unknown random-stream purpose 'agent'"):
        rng_for(0, 1, "agent")


def test_mgral_with_the_gp_value_model_on_task_aware_features(tiny_project):
    """reward.estimator gp + reward.representation task_aware: the factory builds the estimator on descriptors of
    the cycle's inference (8 classes + 2 entropy columns + 3 components) and the cycle logs the GP's fit."""
    ids = PoolState.load(tiny_project).ids("pool")
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(len(ids), 8)).astype(np.float32)
    detections = []
    for _ in ids:
        probs = rng.dirichlet(np.full(8, 0.3), int(rng.integers(0, 3))).astype(np.float32)  # (n, 8)
        detections.append(Detections(np.tile(np.array([[0, 0, 9, 9]], np.float32), (len(probs), 1)),
                                     probs.max(1), probs.argmax(1).astype(np.int64), probs))
    path = tiny_project / "cycles" / "cycle_001" / "pool_inference.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    inference = str(save_inference(path, InferenceResult(ids, embeddings, detections)))
    params = load_params(tiny_project / "params.yaml", {"agent.iterations": 4, "reward.estimator": "gp",
                                                        "reward.representation": "task_aware",
                                                        "reward.task_aware_pca_dims": 3, "reward.max_fallbacks": 0})
    unlabeled = PoolState.load(tiny_project).unlabeled_pool_ids
    row = {image_id: i for i, image_id in enumerate(ids)}
    for r in range(5):
        batch = rng.choice(unlabeled, 8, replace=False)
        save_record(lookup_dir(tiny_project, 1), LookupRecord(f"record_{r:03d}", batch,
                                                              embeddings[[row[i] for i in batch]], 0.1 + r / 100))
    view = steps.pool_view(tiny_project, Path(inference))
    estimator = LookupEstimatorFactory(tiny_project, params, 1, "unused", inference)(view, 8)
    assert estimator.value_model is not None and estimator.index.directions.shape[1] == 8 + 2 + 3
    features_of = load_inference(inference).task_aware_features(8, 3)
    np.testing.assert_allclose(estimator.distances(features_of(np.array(batch))), estimator.pairwise_distances()[4],
                               atol=1e-5)
    with pytest.raises(KeyError, match="no inference result for image id 'nope'"):
        features_of(np.array(["nope"]))
    chosen, outputs = select_batch(tiny_project, params, inference, 1, "mgral", 8, weights="unused")
    assert len(set(chosen)) == 8 and set(chosen) <= set(unlabeled.tolist())
    assert outputs["metrics"]["lookup_gp_lengthscale"] > 0 and outputs["metrics"]["lookup_fallbacks"] == 0
