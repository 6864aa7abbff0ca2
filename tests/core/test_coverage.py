"""The coverage gap: how far the labeled set's mix of images (k-means clusters of the embeddings) is from the
pool's; a batch drawn from one kind of image shows a large gap, a random batch a small one."""

import numpy as np
import pytest

from mgral_core.coverage import selection_coverage, total_variation


def _two_kinds(rng, n_a=300, n_b=100):
    a = rng.normal(0, 0.3, (n_a, 4)) + np.array([5, 0, 0, 0])
    b = rng.normal(0, 0.3, (n_b, 4)) - np.array([5, 0, 0, 0])
    return np.concatenate([a, b]).astype(np.float32)  # rows 0..n_a-1 kind a, the rest kind b


def test_total_variation_is_half_the_l1_distance():
    assert total_variation([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.5)
    assert total_variation([0.2, 0.8], [0.2, 0.8]) == 0.0
    with pytest.raises(ValueError, match="different lengths"):
        total_variation([1.0], [0.5, 0.5])


def test_a_batch_of_one_kind_has_a_large_gap_and_a_random_batch_a_small_one():
    rng = np.random.default_rng(0)
    pool = _two_kinds(rng)  # 75 % kind a, 25 % kind b
    labeled, unlabeled = pool[::4], np.delete(pool, np.s_[::4], axis=0)  # L drawn like the pool
    kind_b = np.flatnonzero(unlabeled[:, 0] < 0)
    kind_a = np.flatnonzero(unlabeled[:, 0] > 0)
    one_kind = selection_coverage(labeled, unlabeled, kind_a[:100], 2, seed=0)
    assert one_kind.batch_gap == pytest.approx(0.25, abs=1e-9)  # all kind a against 75 %
    assert one_kind.labeled_gap == pytest.approx(abs(175 / 200 - 0.75), abs=1e-9)
    assert one_kind.pool_share.sum() == pytest.approx(1) and sorted(one_kind.pool_share) == [0.25, 0.75]
    assert one_kind.under_represented(0.75) == [int(np.argmin(one_kind.pool_share))]  # kind b: 12.5 % vs 25 %
    random_batch = selection_coverage(labeled, unlabeled, rng.choice(len(unlabeled), 100, replace=False), 2, seed=0)
    assert random_batch.labeled_gap < 0.06 < one_kind.labeled_gap
    only_b = selection_coverage(labeled, unlabeled, kind_b[:50], 2, seed=0)
    assert only_b.batch_gap == pytest.approx(0.75, abs=1e-9)
    # more clusters than images are capped; an empty pool is refused
    assert len(selection_coverage(labeled[:2], unlabeled[:3], np.array([0]), 50, seed=0).pool_share) == 5
    with pytest.raises(ValueError, match="empty pool"):
        selection_coverage(np.zeros((0, 4)), np.zeros((0, 4), np.float32), np.array([], np.int64), 2, seed=0)
