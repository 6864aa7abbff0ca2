"""The reward estimator recovers a known function of batch composition; fallback triggers and is bounded."""

import dataclasses

import numpy as np
import pytest
from scipy.stats import spearmanr

from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_workspace.lookup_store import finished_record_ids, save_record
from mgral_core.reward import (
    RewardEstimator,
    fallback_threshold,
    inverse_distance_estimate,
    leave_one_out_spearman,
)

CLUSTERS, TARGET = 4, 1


def embeddings(seed, n=2000, dim=64, latent=8):
    """4 clusters in an 8-d latent space, rectified into 64-d, plus noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3.0, (CLUSTERS, latent))
    labels = rng.integers(0, CLUSTERS, n)
    z = centers[labels] + rng.normal(0, 1, (n, latent))
    mix = rng.normal(0, 1 / np.sqrt(latent), (latent, dim))
    return (np.maximum(z @ mix, 0) + 0.1 * rng.normal(size=(n, dim))).astype(np.float32), labels


def composition_records(emb, labels, rng, n, k=40, prefix="record_"):
    """Batches with random cluster mixes; value = share of the TARGET cluster plus noise (sd 0.01)."""
    records = []
    for i in range(n):
        weights = rng.dirichlet(np.full(CLUSTERS, 0.7))[labels]
        rows = rng.choice(len(labels), k, replace=False, p=weights / weights.sum())
        value = float((labels[rows] == TARGET).mean() + rng.normal(0, 0.01))
        records.append(LookupRecord(f"{prefix}{i:03d}", rows.astype(str), emb[rows], value))
    return records


@pytest.mark.parametrize("seed", [0, 2])
def test_estimator_recovers_a_smooth_function_of_composition(seed):
    emb, labels = embeddings(seed)
    rng = np.random.default_rng(seed + 10)
    estimator = RewardEstimator(LookupTable(composition_records(emb, labels, rng, 80)),
                                lambda ids: emb[np.asarray(ids).astype(int)], fallback_rule="never", seed=seed)
    fresh = composition_records(emb, labels, rng, 30, prefix="fresh_")
    estimates = [estimator(r.batch_ids) for r in fresh]
    assert spearmanr(estimates, [r.value for r in fresh]).statistic >= 0.7
    assert leave_one_out_spearman(estimator) >= 0.7
    assert estimator.queries == 30 and estimator.fallbacks == 0


def test_loo_spearman_from_a_table_matches_the_estimator():
    emb, labels = embeddings(1)
    table = LookupTable(composition_records(emb, labels, np.random.default_rng(3), 30))
    from_estimator = leave_one_out_spearman(RewardEstimator(table, seed=4))
    assert leave_one_out_spearman(table, seed=4) == pytest.approx(from_estimator)
    assert np.isnan(leave_one_out_spearman(LookupTable(table.records[:2])))


def test_exact_match_returns_the_record_value_and_weights_are_inverse_distance():
    emb, labels = embeddings(1)
    table = LookupTable(composition_records(emb, labels, np.random.default_rng(3), 10))
    for method in ("sliced", "exact"):
        estimator = RewardEstimator(table, method=method, fallback_rule="never")
        r = table.records[4]
        assert estimator(r.batch_ids, r.embeddings[::-1]) == pytest.approx(r.value, abs=1e-6)
    assert inverse_distance_estimate(np.array([4.0, 1.0, 2.0]), np.array([9.0, 1.0, 4.0]), 2) == pytest.approx(2.0)
    assert inverse_distance_estimate(np.array([0.5, 0.0]), np.array([1.0, 7.0]), 2) == 7.0


def test_reference_value_is_the_mean_of_random_batch_records():
    emb, labels = embeddings(1)
    table = LookupTable(composition_records(emb, labels, np.random.default_rng(3), 10))
    estimator = RewardEstimator(table)
    assert estimator.reference_value == pytest.approx(table.values.mean())
    kinds = ["random", "proposal", "mixture", "random", "cross"] * 2  # a designed table: only its random batches
    designed = LookupTable([dataclasses.replace(r, extras={"kind": kind}) for r, kind in zip(table, kinds)])
    assert RewardEstimator(designed).reference_value == pytest.approx(
        np.mean([r.value for r, kind in zip(table, kinds) if kind == "random"]))
    mixed = LookupTable([dataclasses.replace(r, extras={"kind": "mixed"}) for r in table])  # no random one: all
    assert RewardEstimator(mixed).reference_value == pytest.approx(table.values.mean())


def test_fallback_rules():
    pairwise = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=float)  # pairs 1, 2, 3
    assert fallback_threshold(pairwise, "mean_minus_std") == pytest.approx(2 - np.std([1, 2, 3]))
    assert fallback_threshold(pairwise, "quantile:0.5") == pytest.approx(2.0)
    assert fallback_threshold(pairwise, "never") == float("inf")
    assert fallback_threshold(pairwise[:1, :1], "mean_minus_std") == float("inf")
    for bad in ("median", "quantile:2", "quantile:x"):
        with pytest.raises(ValueError, match="fallback rule"):
            fallback_threshold(pairwise, bad)


def far_batch_setup(tmp_path):
    """A 10-record table persisted under tmp_path, an embedder placing batch ids 1000*i.. at 100 * (i + 1) from the
    records and from each other, and a direct trainer that returns 0.5 and lists what it trained."""
    emb, labels = embeddings(4)
    table = LookupTable(composition_records(emb, labels, np.random.default_rng(1), 10), on_add=lambda r: save_record(tmp_path, r))
    trained = []

    def far(ids):  # batch i sits 100 * (i + 1) away from the records and from the other far batches
        ids = np.asarray(ids).astype(int)
        return emb[ids % 1000] + 100.0 * (ids[0] // 1000 + 1)

    def direct_value(ids):
        trained.append(ids)
        return 0.5

    return table, far, direct_value, trained


def test_fallback_triggers_on_far_batches_and_is_bounded(tmp_path):
    table, far, direct_value, trained = far_batch_setup(tmp_path)
    estimator = RewardEstimator(table, far, max_fallbacks=2, direct_value=direct_value)
    near = table.records[0]
    assert estimator(near.batch_ids, near.embeddings) == pytest.approx(near.value)  # near: no fallback
    values = [estimator(np.arange(30) + 1000 * i) for i in range(4)]
    assert len(trained) == 2 and estimator.fallbacks == 2 and estimator.far_queries == 4
    assert values[:2] == [0.5, 0.5]
    assert len(table) == 12 and sum(r.is_fallback for r in table) == 2
    assert len([i for i in finished_record_ids(tmp_path) if i.startswith("fallback_")]) == 2  # persisted
    assert estimator.reference_value == pytest.approx(np.mean([r.value for r in table.records[:10]]))
    assert estimator(np.arange(30)) == 0.5  # the trained batch is now an exact match

    no_trainer = RewardEstimator(LookupTable(table.records[:10]), far, max_fallbacks=2)
    no_trainer(np.arange(30) + 5000)
    assert no_trainer.far_queries == 1 and no_trainer.fallbacks == 0
