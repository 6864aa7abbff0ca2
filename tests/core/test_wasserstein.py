"""Exact and sliced Wasserstein distances between embedding sets: values, invariances, agreement."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from mgral_core.wasserstein import ExactIndex, SlicedIndex, build_index, distances_to_records, exact_w2

CLUSTERS = 8


def embeddings(seed, n=3000, dim=256, latent=16, noise=0.3):
    """Detector-like embeddings: 8 clusters in a 16-d latent space, rectified into 256-d, plus noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (CLUSTERS, latent))
    labels = rng.integers(0, CLUSTERS, n)
    z = centers[labels] + rng.normal(0, 1, (n, latent))
    mix = rng.normal(0, 1 / np.sqrt(latent), (latent, dim))
    return (np.maximum(z @ mix, 0) + noise * rng.normal(size=(n, dim))).astype(np.float32), labels


def mixed_batch(rng, labels, k):
    """k distinct rows drawn with a random cluster mix (Dirichlet), so batches differ in composition."""
    weights = rng.dirichlet(np.full(CLUSTERS, 0.7))[labels]
    return rng.choice(len(labels), k, replace=False, p=weights / weights.sum())


def test_exact_w2_of_a_translation_is_its_length():
    points = np.random.default_rng(0).normal(size=(30, 5))
    shift = np.array([3.0, 0.0, 4.0, 0.0, 0.0])
    assert exact_w2(points, points + shift) == pytest.approx(5.0, rel=1e-9)
    assert exact_w2(points, points[::-1]) == pytest.approx(0.0, abs=1e-6)


def test_sliced_is_exact_in_one_dimension():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 1)), rng.normal(2.0, 0.5, size=(40, 1))
    index = build_index([b], "sliced", n_projections=4, n_quantiles=40)
    assert distances_to_records(a, index)[0] == pytest.approx(exact_w2(a, b), rel=1e-9)


def test_batches_of_different_sizes_compare():
    emb, labels = embeddings(2, n=2000, dim=32)
    same = [emb[labels == 0][:n] for n in (20, 80)]  # two sizes, same cluster
    other = emb[labels == 1][:50]
    index = build_index([same[0], same[1], other], "sliced", seed=0)
    d = distances_to_records(emb[labels == 0][100:160], index)  # (3,)
    assert d.shape == (3,)
    assert max(d[0], d[1]) < d[2]


def test_distances_ignore_row_order_and_an_identical_batch_is_at_zero():
    emb, _ = embeddings(3, n=300, dim=32)
    records = [emb[:40], emb[40:80], emb[80:120]]
    index = build_index(records, "sliced", seed=0, n_quantiles=40)
    d = distances_to_records(emb[40:80][::-1], index)
    assert d[1] == 0.0
    assert np.all(d[[0, 2]] > 0)


def test_add_matches_building_with_the_record():
    emb, _ = embeddings(4, n=300, dim=32)
    records = [emb[:40], emb[40:80], emb[80:120]]
    grown = build_index(records[:2], "sliced", seed=5).add(records[2])
    whole = build_index(records, "sliced", seed=5)
    np.testing.assert_array_equal(grown.record_quantiles, whole.record_quantiles)
    exact = build_index(records[:2], "exact").add(records[2])
    assert isinstance(exact, ExactIndex) and len(exact) == 3


def test_pairwise_is_symmetric_with_zero_diagonal_and_matches_queries():
    emb, _ = embeddings(5, n=300, dim=32)
    records = [emb[i * 30:(i + 1) * 30] for i in range(4)]
    for method in ("exact", "sliced"):
        index = build_index(records, method, seed=0)
        pairwise = index.pairwise()
        np.testing.assert_allclose(pairwise, pairwise.T)
        np.testing.assert_allclose(np.diag(pairwise), 0, atol=1e-6)
        np.testing.assert_allclose(pairwise[2], distances_to_records(records[2], index), atol=1e-6)


def test_sliced_ranks_records_like_exact():
    """On detector-like embeddings (256-d) the fast method orders the records as exact EMD does."""
    correlations = []
    for seed in range(2):
        emb, labels = embeddings(seed)
        rng = np.random.default_rng(100 + seed)
        records = [emb[mixed_batch(rng, labels, 60)] for _ in range(20)]
        exact, sliced = build_index(records, "exact"), build_index(records, "sliced", seed=seed)
        assert isinstance(sliced, SlicedIndex) and sliced.record_quantiles.shape == (20, 128, 128)
        for _ in range(3):
            candidate = emb[mixed_batch(rng, labels, 60)]
            correlations.append(spearmanr(distances_to_records(candidate, exact),
                                          distances_to_records(candidate, sliced)).statistic)
    assert np.mean(correlations) >= 0.9, correlations
    assert min(correlations) >= 0.8, correlations


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown distance method"):
        build_index([np.ones((3, 2))], "sinkhorn")
    with pytest.raises(ValueError, match="non-empty"):
        distances_to_records(np.ones((0, 2)), build_index([np.ones((3, 2))], "sliced"))
