"""One contract for every registered selection strategy, MGRAL included: k distinct unlabeled ids,
deterministic per seed."""

import zlib

import numpy as np
import pytest

from mgral_core.agent import AgentConfig
from mgral_core.detections import Detections
from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.reward import RewardEstimator
from mgral_core.strategies import BASELINE_STRATEGIES, MODEL_STRATEGIES, STRATEGY_NAMES, get_strategy
from mgral_core.strategies.base import PoolView, SelectionContext
from mgral_core.strategies.mgral import AgentSettings

EXPECTED_NAMES = {"random", "entropy_mean", "entropy_sum", "entropy_max", "least_confidence", "coreset", "cdal", "ebal",
                  "typiclust"}


def fake_estimator(pool: PoolView, k: int, estimator: str = "knn") -> RewardEstimator:
    """A reward estimator over a table of random batches of this pool, valued by their mean first embedding
    coordinate: what the cycle's lookup table gives MGRAL, without training anything."""
    rng = np.random.default_rng(99)
    n = len(pool.unlabeled_ids)
    size = max(1, min(k, n))
    records = []
    for r in range(6):
        rows = rng.choice(n, size, replace=False)
        records.append(LookupRecord(f"record_{r:03d}", pool.unlabeled_ids[rows], pool.unlabeled_embeddings[rows],
                                    float(pool.unlabeled_embeddings[rows, 0].mean())))
    return RewardEstimator(LookupTable(records), fallback_rule="never", estimator=estimator)


def fake_oracle_scorer(batches):
    """True-label values of candidate batches without training: a fixed hash of each batch's ids."""
    return [float(sum(zlib.crc32(i.encode()) for i in batch) % 1000) / 1000 for batch in batches]


FAKE_CONTEXT = SelectionContext(estimator_factory=fake_estimator, agent=AgentSettings(AgentConfig(iterations=3)),
                                oracle_scorer=fake_oracle_scorer)
GP_CONTEXT = SelectionContext(estimator_factory=lambda pool, k: fake_estimator(pool, k, "gp"),
                              agent=AgentSettings(AgentConfig(iterations=3)))


def random_detections(rng, n, num_classes):
    probs = rng.dirichlet(np.ones(num_classes) * 0.5, n).astype(np.float32)  # (n, C)
    xy = rng.uniform(0, 50, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1).astype(np.float32)
    return Detections(boxes, probs.max(1), probs.argmax(1).astype(np.int64), probs)


def make_pool(seed=0, n_unlabeled=40, n_labeled=10, num_classes=3, dim=16, empty_every=7):
    """A synthetic pool view: random embeddings, random detections; every `empty_every`-th image has none."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:03d}" for i in range(n_unlabeled)])
    detections = {image_id: random_detections(rng, 0 if i % empty_every == 0 else int(rng.integers(1, 6)), num_classes)
                  for i, image_id in enumerate(ids)}
    return PoolView(
        unlabeled_ids=ids, unlabeled_embeddings=rng.normal(size=(n_unlabeled, dim)).astype(np.float32),
        labeled_ids=np.array([f"l{i:03d}" for i in range(n_labeled)]),
        labeled_embeddings=rng.normal(size=(n_labeled, dim)).astype(np.float32),
        detections=detections, num_classes=num_classes,
    )


def tempting_labeled_pool():
    """Labeled images that every strategy would love: detections in the view, flat class
    probabilities, weak scores, outlying embeddings. None of them may come back."""
    pool = make_pool()
    flat = np.full((4, 3), 1 / 3, np.float32)
    detections = dict(pool.detections)
    for image_id in pool.labeled_ids:
        detections[str(image_id)] = Detections(np.tile(np.array([[0, 0, 9, 9]], np.float32), (4, 1)),
                                               np.full(4, 0.01, np.float32), np.zeros(4, np.int64), flat)
    return PoolView(pool.unlabeled_ids, pool.unlabeled_embeddings, pool.labeled_ids,
                    pool.labeled_embeddings * 100, detections, pool.num_classes)


@pytest.fixture(params=[*sorted(STRATEGY_NAMES), "mgral:gp"])
def strategy(request):
    """Every registered strategy, built the way the cycle builds it (MGRAL with a fake estimator, the oracle
    ceiling with a fake true-label scorer), and MGRAL once more with the GP value model (reward.estimator gp)."""
    if request.param == "mgral:gp":
        return get_strategy("mgral", GP_CONTEXT)
    return get_strategy(request.param, FAKE_CONTEXT)


def test_registry_names():
    assert set(BASELINE_STRATEGIES) == EXPECTED_NAMES
    assert set(MODEL_STRATEGIES) == {"mgral", "oracle_best_of_n"}
    assert set(STRATEGY_NAMES) == EXPECTED_NAMES | set(MODEL_STRATEGIES)
    assert all(get_strategy(name) is BASELINE_STRATEGIES[name] for name in EXPECTED_NAMES)


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown strategy 'magic'; known strategies: .*cdal.*coreset.*ebal"):
        get_strategy("magic")
    with pytest.raises(ValueError, match="'mgral' needs a per-cycle lookup table"):
        get_strategy("mgral")
    with pytest.raises(ValueError, match="'oracle_best_of_n' is a simulation-only upper bound.*no oracle"):
        get_strategy("oracle_best_of_n")


def test_returns_k_distinct_unlabeled_ids(strategy):
    pool = make_pool()
    ids = strategy(pool, 12, np.random.default_rng(0))
    assert len(ids) == 12 and len(set(ids)) == 12
    assert set(ids) <= set(pool.unlabeled_ids.tolist())
    assert all(type(i) is str for i in ids)


def test_same_seed_same_answer(strategy):
    pool = make_pool()
    assert strategy(pool, 10, np.random.default_rng(3)) == strategy(pool, 10, np.random.default_rng(3))
    assert strategy(make_pool(), 10, np.random.default_rng(3)) == strategy(pool, 10, np.random.default_rng(3))


@pytest.mark.parametrize("k", [5, 40])
def test_labeled_ids_never_leak(strategy, k):
    pool = tempting_labeled_pool()
    ids = strategy(pool, k, np.random.default_rng(0))
    assert not set(ids) & set(pool.labeled_ids.tolist())
    assert len(set(ids)) == k and set(ids) <= set(pool.unlabeled_ids.tolist())


def test_budget_edges(strategy):
    pool = make_pool()
    assert strategy(pool, 0, np.random.default_rng(0)) == []
    without_detections = PoolView(pool.unlabeled_ids, pool.unlabeled_embeddings, pool.labeled_ids,
                                  pool.labeled_embeddings, {}, pool.num_classes)
    assert strategy(without_detections, 0, np.random.default_rng(0)) == []
    with pytest.raises(ValueError, match="k=41 exceeds the 40 unlabeled"):
        strategy(pool, 41, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k must be >= 0"):
        strategy(pool, -1, np.random.default_rng(0))
    assert sorted(strategy(pool, 40, np.random.default_rng(0))) == sorted(pool.unlabeled_ids.tolist())


def test_degenerate_pools(strategy):
    no_labeled = make_pool(n_labeled=0)
    assert len(set(strategy(no_labeled, 6, np.random.default_rng(0)))) == 6
    nothing_detected = make_pool(empty_every=1)
    assert len(set(strategy(nothing_detected, 6, np.random.default_rng(0)))) == 6
    single = make_pool(n_unlabeled=1, n_labeled=0)
    assert strategy(single, 1, np.random.default_rng(0)) == ["u000"]


def test_does_not_modify_the_pool(strategy):
    pool = make_pool()
    before = (pool.unlabeled_embeddings.copy(), pool.labeled_embeddings.copy(),
              {i: (d.scores.copy(), d.class_probs.copy()) for i, d in pool.detections.items()})
    strategy(pool, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(pool.unlabeled_embeddings, before[0])
    np.testing.assert_array_equal(pool.labeled_embeddings, before[1])
    for image_id, (scores, probs) in before[2].items():
        np.testing.assert_array_equal(pool.detections[image_id].scores, scores)
        np.testing.assert_array_equal(pool.detections[image_id].class_probs, probs)
