"""The Gaussian-process value model: exact closed-form leave-one-out, sensible hyperparameters, an uncertainty
that grows away from the records and drives the fallback, and clear behaviour on tiny or degenerate tables."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from mgral_core.lookup_table import LookupTable
from mgral_core.reward import RewardEstimator, leave_one_out_spearman
from mgral_core.value_model import (
    GPHyperparameters,
    GPValueModel,
    fit_hyperparameters,
    kernel,
    nested_leave_one_out,
)
from mgral_core.wasserstein import build_index
from mgral_workspace.lookup_store import finished_record_ids, save_record
from tests.core.test_reward import composition_records, embeddings, far_batch_setup


def euclidean(points):
    return np.sqrt(np.square(points[:, None] - points[None]).sum(-1))  # (R, R)


def gp_sample(points, lengthscale, noise_sd, seed):
    """One draw of f ~ GP(0, exp(-d^2 / l^2)) at the points, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    cov = kernel(euclidean(points), lengthscale) + 1e-9 * np.eye(len(points))
    return np.linalg.cholesky(cov) @ rng.normal(size=len(points)) + noise_sd * rng.normal(size=len(points))


def sliced_table(seed=1, n=24):
    emb, labels = embeddings(seed)
    table = LookupTable(composition_records(emb, labels, np.random.default_rng(seed + 3), n))
    pairwise = build_index([r.embeddings for r in table], "sliced", seed=seed).pairwise()
    return table, pairwise


@pytest.mark.parametrize("seed", [0, 2])
def test_gp_recovers_a_smooth_function_of_batch_composition(seed):
    emb, labels = embeddings(seed)
    rng = np.random.default_rng(seed + 10)
    table = LookupTable(composition_records(emb, labels, rng, 40))
    embeddings_of = lambda ids: emb[np.asarray(ids).astype(int)]  # noqa: E731
    gp = RewardEstimator(table, embeddings_of, estimator="gp", seed=seed)
    knn = RewardEstimator(table, embeddings_of, fallback_rule="never", seed=seed)
    fresh = composition_records(emb, labels, rng, 30, prefix="fresh_")
    truth = [r.value for r in fresh]
    assert spearmanr([gp(r.batch_ids) for r in fresh], truth).statistic >= 0.9
    assert leave_one_out_spearman(gp) >= 0.9
    assert leave_one_out_spearman(gp) > leave_one_out_spearman(knn)  # every record helps, not just 3
    assert spearmanr(nested_leave_one_out(gp.pairwise_distances(), table.values), table.values).statistic >= 0.85
    assert gp.value_model.hyperparameters.fitted and gp.fallbacks == 0


def test_closed_form_leave_one_out_equals_refitting_without_each_record():
    table, pairwise = sliced_table()
    model = GPValueModel(pairwise, table.values)
    h = model.hyperparameters
    means, stds = model.leave_one_out()
    for i in range(len(table)):
        keep = np.arange(len(table)) != i
        alone = GPValueModel(pairwise[np.ix_(keep, keep)], table.values[keep], h).predict(pairwise[i, keep])
        assert alone.mean == pytest.approx(means[i], rel=1e-7, abs=1e-9)
        # the LOO variance is of the noisy record value: the latent variance plus the noise variance
        assert np.sqrt(alone.std ** 2 + h.signal_variance * h.noise_ratio) == pytest.approx(stds[i], rel=1e-6)
    assert leave_one_out_spearman(table, estimator="gp", seed=1) == pytest.approx(
        spearmanr(table.values, means).statistic)


def test_fit_recovers_the_length_scale_and_the_noise_that_made_the_data():
    points = np.random.default_rng(0).uniform(0, 10, (150, 1))
    for true_lengthscale in (0.7, 3.0):
        h = fit_hyperparameters(euclidean(points), gp_sample(points, true_lengthscale, 0.1, seed=1))
        assert true_lengthscale / 2 <= h.lengthscale <= true_lengthscale * 2, h
        noise_variance = h.signal_variance * h.noise_ratio
        assert 0.01 / 3 <= noise_variance <= 0.01 * 3 and 0.2 <= h.signal_variance <= 10, h  # true: 0.01 and 1
    noise = fit_hyperparameters(euclidean(points), np.random.default_rng(2).normal(size=150))
    assert noise.noise_ratio >= 1.0, noise  # values unrelated to distance: mostly noise


def test_std_grows_away_from_the_records():
    points = np.linspace(0, 10, 30)[:, None]
    values = np.sin(points[:, 0])
    model = GPValueModel(euclidean(points), values)
    ratios = [model.predict(np.abs(points[:, 0] - x)).std_ratio for x in (5.1, 12.0, 20.0, 1e6)]
    assert ratios == sorted(ratios) and ratios[0] < 0.2 and ratios[-1] > 1.0
    far = model.predict(np.full(30, 1e6))
    assert far.mean == pytest.approx(model._solved.beta) and far.std == pytest.approx(far.std_ratio * model.prior_std)
    means, stds = model.predict_many(np.abs(points[:, 0][None] - np.array([[5.1], [20.0]])))
    assert means[1] == pytest.approx(model.predict(np.abs(points[:, 0] - 20.0)).mean) and stds[0] < stds[1]


def test_gp_fallback_trains_uncertain_batches_refits_and_is_bounded(tmp_path):
    table, far, direct_value, trained = far_batch_setup(tmp_path)
    estimator = RewardEstimator(table, far, estimator="gp", max_fallbacks=2, direct_value=direct_value)
    near = table.records[0]
    assert estimator.value_model.predict(estimator.distances(near.embeddings)).std_ratio < 0.8
    assert estimator(near.batch_ids, near.embeddings) == pytest.approx(near.value, abs=0.05)  # covered: no fallback
    assert trained == []
    values = [estimator(np.arange(30) + 1000 * i) for i in range(4)]
    assert len(trained) == 2 and estimator.fallbacks == 2 and estimator.far_queries == 4
    assert values[:2] == [0.5, 0.5]
    assert len(table) == 12 and len(estimator.value_model) == 12  # refitted with the new records
    assert len([i for i in finished_record_ids(tmp_path) if i.startswith("fallback_")]) == 2
    np.testing.assert_allclose(estimator.pairwise_distances(), estimator.index.pairwise(), rtol=1e-6, atol=1e-9)
    again = estimator.value_model.predict(estimator.distances(far(np.arange(30))))
    assert again.std_ratio < 0.8 and again.mean == pytest.approx(0.5, abs=0.05)  # the trained batch is now known
    assert estimator.diagnostics()["gp_lengthscale"] == estimator.value_model.hyperparameters.lengthscale


def test_fit_and_predictions_are_deterministic():
    table, pairwise = sliced_table(seed=3)
    a, b = GPValueModel(pairwise, table.values), GPValueModel(pairwise.copy(), table.values.copy())
    assert a.hyperparameters == b.hyperparameters
    np.testing.assert_array_equal(a.leave_one_out()[0], b.leave_one_out()[0])
    assert a.predict(pairwise[2]) == b.predict(pairwise[2])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_to_three_records_give_finite_answers(n):
    table, pairwise = sliced_table(n=n)
    table = LookupTable(table.records[:n])
    pairwise = pairwise[:n, :n]
    model = GPValueModel(pairwise, table.values)
    assert model.hyperparameters.fitted is (n >= 3)
    for d in (pairwise[0], pairwise[0] + 50.0):
        p = model.predict(d)
        assert np.isfinite([p.mean, p.std, p.std_ratio]).all()
    if n == 1:
        assert model.predict(pairwise[0]).mean == pytest.approx(table.values[0])
        assert np.isnan(model.leave_one_out()[0]).all()  # nothing to predict a lone record from
    else:
        assert np.isfinite(model.leave_one_out()[0]).all()
    estimator = RewardEstimator(table, estimator="gp", max_fallbacks=1, direct_value=lambda ids: 0.123)
    value = estimator(table.records[0].batch_ids, table.records[0].embeddings + 100.0)  # far: trained directly
    assert value == 0.123 and len(estimator.value_model) == n + 1
    assert np.isfinite(estimator(table.records[0].batch_ids, table.records[0].embeddings))
    assert np.isnan(leave_one_out_spearman(LookupTable(table.records[:n]), estimator="gp")) == (n < 3)


def test_constant_values_and_duplicate_records():
    table, pairwise = sliced_table(n=6)
    model = GPValueModel(pairwise, np.full(6, 0.25))
    assert not model.hyperparameters.fitted and model.prior_std == 0.0
    assert model.predict(pairwise[1]).mean == pytest.approx(0.25) and model.predict(pairwise[1] + 9).std == 0.0
    twice = np.zeros((2, 2))  # the same batch recorded twice, with two measured values
    assert GPValueModel(twice, np.array([0.1, 0.3])).predict(np.zeros(2)).mean == pytest.approx(0.2)


def test_a_kernel_matrix_with_negative_eigenvalues_is_clipped_not_fatal():
    rng = np.random.default_rng(0)
    upper = np.triu(rng.uniform(1, 2, (30, 30)), 1)
    metric = upper + upper.T  # every distance in [1, 2]: a metric, but not a Euclidean one
    assert np.linalg.eigvalsh(kernel(metric, 20.0)).min() < -1e-6  # exp(-d^2/l^2) is not PSD on it
    values = rng.normal(size=30)
    model = GPValueModel(metric, values, GPHyperparameters(20.0, 1e-6, 1.0, fitted=False))
    means, stds = model.leave_one_out()
    p = model.predict(metric[0])
    assert np.isfinite(means).all() and (stds > 0).all() and np.isfinite([p.mean, p.std]).all() and p.std >= 0
    assert fit_hyperparameters(metric, values).fitted


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"pairwise distances must be \(2, 2\)"):
        GPValueModel(np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="non-empty"):
        GPValueModel(np.zeros((0, 0)), np.zeros(0))
    with pytest.raises(ValueError, match=r"need \(2,\) distances"):
        GPValueModel(np.zeros((2, 2)), np.array([0.0, 1.0])).predict(np.zeros(3))
    table, _ = sliced_table(n=4)
    with pytest.raises(ValueError, match="unknown estimator 'mlp'"):
        RewardEstimator(table, estimator="mlp")
