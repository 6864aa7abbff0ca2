"""Hierarchical selection: the shortlist keeps the pool's composition, is deterministic, and the agent
only ever reads and returns shortlisted rows; off, it changes nothing. MGRAL's CDAL shortlist covers every
kind of image and lets the reward choose within it."""

import numpy as np
import pytest

from mgral_core.agent import AgentConfig, select_top_k, train_agent
from mgral_core.detections import Detections
from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.reward import RewardEstimator
from mgral_core.shortlist import kmeans, nearest_center, proportional_quotas, shortlist_rows
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.cdal import cdal
from mgral_core.strategies.mgral import MgralStrategy, cdal_shortlist, train_and_select

SIZES = (600, 300, 80, 20)  # a long tail of four well-separated clusters


def tailed_pool(seed=0, dim=8):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (len(SIZES), dim))
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    rng.shuffle(labels)
    return (centers[labels] + rng.normal(0, 0.5, (len(labels), dim))).astype(np.float32), labels


def test_off_means_every_row():
    x, _ = tailed_pool()
    np.testing.assert_array_equal(shortlist_rows(x, 10, 0, seed=0), np.arange(len(x)))
    np.testing.assert_array_equal(shortlist_rows(x, 10, len(x) + 5, seed=0), np.arange(len(x)))


def test_bad_sizes_and_methods_are_refused():
    x, _ = tailed_pool()
    with pytest.raises(ValueError, match="at least the budget"):
        shortlist_rows(x, 50, 40, seed=0)
    with pytest.raises(ValueError, match="unknown shortlist method"):
        shortlist_rows(x, 5, 40, seed=0, method="entropy")


@pytest.mark.parametrize("method", ["kmeans", "random"])
def test_shortlist_is_sorted_distinct_and_seeded(method):
    x, _ = tailed_pool()
    rows = shortlist_rows(x, 20, 100, seed=3, method=method, n_clusters=4)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100
    assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < len(x)
    np.testing.assert_array_equal(rows, shortlist_rows(x, 20, 100, seed=3, method=method, n_clusters=4))
    assert not np.array_equal(rows, shortlist_rows(x, 20, 100, seed=4, method=method, n_clusters=4))


def test_kmeans_shortlist_keeps_the_composition_and_the_rare_cluster():
    x, labels = tailed_pool()
    rows = shortlist_rows(x, 20, 50, seed=0, n_clusters=4)
    counts = np.bincount(labels[rows], minlength=4)
    expected = 50 * np.array(SIZES) / sum(SIZES)  # 30, 15, 4, 1
    assert np.all(np.abs(counts - expected) <= 1), counts
    assert counts[3] >= 1  # the 2 % cluster is represented


def test_kmeans_recovers_separated_clusters_and_assigns_to_the_nearest_center():
    x, labels = tailed_pool(1)
    centers, found = kmeans(x, 4, seed=0)
    for cluster in range(4):  # each true cluster lands in one found cluster
        assert len(set(found[labels == cluster].tolist())) == 1
    assert len(set(found.tolist())) == 4
    brute = np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(2), axis=1)
    np.testing.assert_array_equal(nearest_center(x, centers), brute)


def test_quotas_are_proportional_with_one_per_cluster_and_within_capacity():
    np.testing.assert_array_equal(proportional_quotas(np.array([1, 1, 1, 97]), 5), [1, 1, 1, 2])
    np.testing.assert_array_equal(proportional_quotas(np.array([0, 10, 30, 60]), 10), [0, 1, 3, 6])
    np.testing.assert_array_equal(proportional_quotas(np.array([3, 3, 3]), 9), [3, 3, 3])
    for size in (5, 7, 50, 99):
        counts = np.array([2, 5, 40, 50, 3])
        quotas = proportional_quotas(counts, size)
        assert quotas.sum() == size and np.all(quotas >= 1) and np.all(quotas <= counts)
    with pytest.raises(ValueError):
        proportional_quotas(np.array([5, 5, 5]), 2)


def test_train_and_select_reads_and_returns_only_shortlisted_rows():
    x, labels = tailed_pool()
    rows = shortlist_rows(x, 10, 120, seed=7)
    queried = []

    def reward(batch_rows):
        queried.append(np.asarray(batch_rows))
        return float((labels[batch_rows] == 2).mean())

    chosen, agent, history = train_and_select(x, 10, reward, AgentConfig(iterations=5, seed=7), 0.1, shortlist=120)
    assert len(chosen) == 10 and len(set(chosen.tolist())) == 10
    assert set(chosen.tolist()) <= set(rows.tolist())
    assert len(queried) == 5 and all(set(q.tolist()) <= set(rows.tolist()) for q in queried)
    assert agent.config.chunks == 1 and agent.config.precision == "float32"  # 120 rows: not a large pool


def test_train_and_select_without_shortlist_equals_the_plain_agent():
    x, labels = tailed_pool(2)

    def reward(batch_rows):
        return float((labels[batch_rows] == 1).mean())

    config = AgentConfig(iterations=4, seed=11)
    chosen, _, history = train_and_select(x, 15, reward, config, 0.3)
    agent, plain_history = train_agent(x, 15, reward, config, 0.3)
    np.testing.assert_array_equal(chosen, select_top_k(agent, x, 15))
    assert history.rewards == plain_history.rewards


def test_mgral_strategy_with_a_shortlist_keeps_the_contract():
    x, labels = tailed_pool(3)
    ids = np.array([f"u{i:04d}" for i in range(len(x))])
    pool = PoolView(ids[:900], x[:900], ids[900:], x[900:])
    rng = np.random.default_rng(0)
    records = [LookupRecord(f"record_{r:03d}", ids[b], x[b], float((labels[b] == 2).mean()))
               for r, b in enumerate(rng.choice(900, (20, 12))) if len(set(b.tolist())) == 12]
    strategy = MgralStrategy(RewardEstimator(LookupTable(records), fallback_rule="never"),
                             agent_config=AgentConfig(iterations=3), shortlist=60)
    picked = strategy(pool, 12, np.random.default_rng(5))
    assert len(picked) == 12 and len(set(picked)) == 12 and set(picked) <= set(ids[:900].tolist())
    assert picked == strategy(pool, 12, np.random.default_rng(5))


def kinds_pool(seed=0, num_classes=4):
    """A pool view whose images come in the four kinds of SIZES, each kind's detections of its own class
    (so CDAL's class-probability space has four well-separated regions), labeled images of kind 0 with
    their detections in the view (CDAL's first centers), and embeddings that carry no kind at all."""
    rng = np.random.default_rng(seed)
    kinds = np.repeat(np.arange(len(SIZES)), SIZES)
    rng.shuffle(kinds)

    def detections(kind):
        probs = np.full((2, num_classes), 0.02, np.float32)
        probs[:, kind] = rng.uniform(0.6, 0.95, 2)
        boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
        return Detections(boxes, probs.max(1), probs.argmax(1).astype(np.int64), probs)

    ids = np.array([f"u{i:04d}" for i in range(len(kinds))])
    labeled = np.array([f"l{i:02d}" for i in range(5)])
    view = {str(i): detections(int(k)) for i, k in zip(ids, kinds)} | {str(i): detections(0) for i in labeled}
    return PoolView(ids, rng.normal(size=(len(ids), 8)).astype(np.float32), labeled,
                    rng.normal(size=(len(labeled), 8)).astype(np.float32), view, num_classes), kinds


def test_cdal_shortlist_is_cdal_s_first_picks_and_covers_every_kind():
    pool, kinds = kinds_pool()
    rows = cdal_shortlist(pool, 10, 40, seed=1)
    assert len(rows) == 40 and np.all(np.diff(rows) > 0)
    assert set(kinds[rows].tolist()) == {0, 1, 2, 3}  # the 2 % kind too; a random 40 misses it half the time
    batch = cdal(pool, 10, np.random.default_rng(123))  # labeled detections in the view: no random first center
    np.testing.assert_array_equal(cdal_shortlist(pool, 10, 10, seed=1),
                                  np.sort(np.flatnonzero(np.isin(pool.unlabeled_ids, batch))))
    np.testing.assert_array_equal(cdal_shortlist(pool, 10, 0, seed=1), np.arange(len(kinds)))
    with pytest.raises(ValueError, match="at least the budget"):
        cdal_shortlist(pool, 10, 5, seed=1)


def test_mgral_with_the_cdal_shortlist_chooses_within_it_by_its_reward():
    pool, kinds = kinds_pool(1)
    favoured = {str(i) for i in pool.unlabeled_ids[kinds == 1]}

    class CountKindOne:  # an exact reward: the share of kind-1 images in the batch
        reference_value, records = 0.0, []

        def __call__(self, batch_ids, embeddings):
            return float(np.mean([str(i) in favoured for i in batch_ids]))

        estimate_only = __call__

    strategy = MgralStrategy(CountKindOne(), agent_config=AgentConfig(iterations=40, lr=0.05), shortlist=60,
                             shortlist_method="cdal", final_choice="best_sampled")
    picked = strategy(pool, 12, np.random.default_rng(5))
    seed = int(np.random.default_rng(5).integers(0, 2**62))  # the agent's seed, drawn first, fixes the shortlist
    allowed = set(pool.unlabeled_ids[cdal_shortlist(pool, 12, 60, seed)].tolist())
    assert len(set(picked)) == 12 and set(picked) <= allowed
    assert picked == strategy(pool, 12, np.random.default_rng(5))
    in_shortlist = np.mean([i in favoured for i in allowed])
    assert np.mean([i in favoured for i in picked]) > in_shortlist  # the reward chose within the shortlist
    with pytest.raises(ValueError, match="unknown shortlist_method 'typical'"):
        MgralStrategy(CountKindOne(), shortlist=60, shortlist_method="typical")


def test_cdal_shortlist_without_labeled_detections_is_seeded_and_nested():
    pool, kinds = kinds_pool(2)
    unlabeled_only = PoolView(pool.unlabeled_ids, pool.unlabeled_embeddings, pool.labeled_ids,
                              pool.labeled_embeddings, {str(i): pool.detections[str(i)] for i in pool.unlabeled_ids},
                              pool.num_classes)  # as the cycle builds it: the first center is drawn from the seed
    rows = cdal_shortlist(unlabeled_only, 10, 40, seed=4)
    np.testing.assert_array_equal(rows, cdal_shortlist(unlabeled_only, 10, 40, seed=4))
    assert not np.array_equal(rows, cdal_shortlist(unlabeled_only, 10, 40, seed=5))
    assert set(cdal_shortlist(unlabeled_only, 10, 10, seed=4).tolist()) <= set(rows.tolist())  # greedy: a prefix
    assert set(kinds[rows].tolist()) == {0, 1, 2, 3}


def test_the_config_offers_exactly_the_shortlist_methods_mgral_runs():
    from typing import get_args

    from mgral_core.strategies.mgral import MGRAL_SHORTLIST_METHODS
    from mgral_workspace.config import AgentParams

    assert get_args(AgentParams.model_fields["shortlist_method"].annotation) == MGRAL_SHORTLIST_METHODS
