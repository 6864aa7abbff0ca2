"""One contract for every selection strategy: k distinct unlabeled ids, deterministic per seed."""

import numpy as np
import pytest

from mgral_core.detections import Detections
from mgral_core.strategies import BASELINE_STRATEGIES, get_strategy
from mgral_core.strategies.base import PoolView


def make_pool(seed=0, n_unlabeled=40, n_labeled=10, num_classes=3, dim=16):
    rng = np.random.default_rng(seed)
    detections = {}
    ids = np.array([f"u{i:03d}" for i in range(n_unlabeled)])
    for i, image_id in enumerate(ids):
        n = 0 if i % 7 == 0 else int(rng.integers(1, 5))
        probs = rng.dirichlet(np.ones(num_classes) * 0.5, n).astype(np.float32)
        xy = rng.uniform(0, 50, (n, 2))
        detections[image_id] = Detections(np.concatenate([xy, xy + 10], 1).astype(np.float32),
                                          probs.max(1), probs.argmax(1).astype(np.int64), probs)
    return PoolView(
        unlabeled_ids=ids, unlabeled_embeddings=rng.normal(size=(n_unlabeled, dim)).astype(np.float32),
        labeled_ids=np.array([f"l{i:03d}" for i in range(n_labeled)]),
        labeled_embeddings=rng.normal(size=(n_labeled, dim)).astype(np.float32),
        detections=detections, num_classes=num_classes,
    )


@pytest.fixture(params=sorted(BASELINE_STRATEGIES))
def strategy(request):
    return get_strategy(request.param)


def test_returns_k_distinct_unlabeled_ids(strategy):
    pool = make_pool()
    ids = strategy(pool, 12, np.random.default_rng(0))
    assert len(ids) == 12
    assert len(set(ids)) == 12
    assert set(ids) <= set(pool.unlabeled_ids.tolist())
    assert not set(ids) & set(pool.labeled_ids.tolist())
    assert all(isinstance(i, str) for i in ids)


def test_same_seed_same_answer(strategy):
    pool = make_pool()
    assert strategy(pool, 10, np.random.default_rng(3)) == strategy(pool, 10, np.random.default_rng(3))


def test_budget_edges(strategy):
    pool = make_pool()
    assert strategy(pool, 0, np.random.default_rng(0)) == []
    with pytest.raises(ValueError, match="exceeds the 40 unlabeled"):
        strategy(pool, 41, np.random.default_rng(0))
    assert sorted(strategy(pool, 40, np.random.default_rng(0))) == sorted(pool.unlabeled_ids.tolist())


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="known strategies: .*coreset"):
        get_strategy("magic")


def test_entropy_prefers_uncertain_images():
    pool = make_pool()
    hi = pool.unlabeled_ids[1]
    flat = np.full((3, 3), 1 / 3, np.float32)
    dets = dict(pool.detections)
    dets[hi] = Detections(np.tile([[0, 0, 5, 5]], (3, 1)).astype(np.float32), flat.max(1), np.zeros(3, np.int64), flat)
    pool = PoolView(pool.unlabeled_ids, pool.unlabeled_embeddings, pool.labeled_ids, pool.labeled_embeddings,
                    dets, 3)
    assert get_strategy("entropy_mean")(pool, 1, np.random.default_rng(0)) == [hi]
    assert get_strategy("entropy_max")(pool, 1, np.random.default_rng(0)) == [hi]


def test_coreset_covers_clusters_before_repeating():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 50, (5, 8))
    emb = np.concatenate([c + rng.normal(0, 0.1, (10, 8)) for c in centers]).astype(np.float32)
    ids = np.array([f"c{i // 10}_{i % 10}" for i in range(50)])
    pool = PoolView(ids, emb, np.array([]), np.zeros((0, 8), np.float32))
    picked = get_strategy("coreset")(pool, 5, np.random.default_rng(1))
    assert sorted(p.split("_")[0] for p in picked) == ["c0", "c1", "c2", "c3", "c4"]
