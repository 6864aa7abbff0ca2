"""Each strategy picks what it claims to: uncertain images, uncovered clusters, non-duplicates."""

import importlib

import numpy as np
import pytest

from mgral_core.detections import Detections
from mgral_core.strategies import get_strategy
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.cdal import image_class_distributions, nearest_symmetric_kl, symmetric_kl
from mgral_core.strategies.coreset import min_squared_distances
from mgral_core.strategies.ebal import NO_CLASS, enms_scores
from mgral_core.strategies.typiclust import typicality
from tests.core.test_strategies_contract import random_detections

FLAT, PAIR, SURE = [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]


def dets(rows, boxes=None, classes=None, scores=None):
    probs = np.asarray(rows, np.float32).reshape(-1, 3)
    n = len(probs)
    boxes = np.tile([[0, 0, 10, 10]], (n, 1)) if boxes is None else boxes
    classes = probs.argmax(1) if classes is None else classes
    scores = probs.max(1) if scores is None else scores
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int64), probs)


def view(detections, embeddings=None, labeled_embeddings=None, num_classes=3):
    ids = np.array(list(detections))
    embeddings = np.random.default_rng(0).normal(size=(len(ids), 4)) if embeddings is None else embeddings
    labeled = np.zeros((0, embeddings.shape[1])) if labeled_embeddings is None else labeled_embeddings
    return PoolView(ids, np.asarray(embeddings, np.float32), np.array([f"l{i}" for i in range(len(labeled))]),
                    np.asarray(labeled, np.float32), detections, num_classes)


def pick(name, pool, k, seed=0):
    return get_strategy(name)(pool, k, np.random.default_rng(seed))


def test_entropy_reductions_pick_their_images():
    pool = view({"one_flat": dets([FLAT]), "flat_among_sure": dets([FLAT] + [SURE] * 5),
                 "many_pairs": dets([PAIR] * 4), "sure": dets([SURE] * 2), "empty": Detections.empty(3)})
    assert pick("entropy_mean", pool, 2) == ["one_flat", "many_pairs"]  # means log 3, log 2
    assert pick("entropy_sum", pool, 1) == ["many_pairs"]  # 4 log 2 > log 3
    assert set(pick("entropy_max", pool, 2)) == {"one_flat", "flat_among_sure"}  # both reach log 3
    assert pick("entropy_mean", pool, 5)[-2:] in (["sure", "empty"], ["empty", "sure"])  # both 0


def test_least_confidence_picks_weakest_best_score():
    pool = view({"strong": dets([SURE], scores=[0.95]), "weak": dets([SURE, SURE], scores=[0.3, 0.2]),
                 "middle": dets([SURE], scores=[0.6]), "empty": Detections.empty(3)})
    assert pick("least_confidence", pool, 4) == ["empty", "weak", "middle", "strong"]


def test_ties_are_broken_by_rng_not_by_order():
    pool = view({f"e{i:02d}": Detections.empty(3) for i in range(30)})  # every entropy score is 0
    draws = {tuple(pick("entropy_sum", pool, 5, seed)) for seed in range(5)}
    assert len(draws) > 1 and ("e00", "e01", "e02", "e03", "e04") not in draws


def test_uncertainty_strategies_name_missing_detections():
    pool = view({"a": dets([FLAT])})
    pool = PoolView(np.array(["a", "b"]), np.zeros((2, 4), np.float32), np.array([]), np.zeros((0, 4), np.float32),
                    pool.detections, 3)
    for name in ("entropy_mean", "least_confidence", "cdal", "ebal"):
        with pytest.raises(ValueError, match="1 have none, e.g. b"):
            pick(name, pool, 1)


def _clusters(n_clusters=5, per_cluster=10, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 50, (n_clusters, dim))
    emb = np.concatenate([c + rng.normal(0, 0.1, (per_cluster, dim)) for c in centers])
    ids = np.array([f"c{i // per_cluster}_{i % per_cluster}" for i in range(len(emb))])
    return ids, emb.astype(np.float32), centers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coreset_covers_every_cluster_before_repeating(seed):
    ids, emb, _ = _clusters(seed=seed)
    pool = PoolView(ids, emb, np.array([]), np.zeros((0, 8), np.float32))
    picked = pick("coreset", pool, 5, seed)
    assert sorted(p.split("_")[0] for p in picked) == ["c0", "c1", "c2", "c3", "c4"]


def test_coreset_starts_from_the_labeled_centers():
    ids, emb, centers = _clusters()
    pool = PoolView(ids, emb, np.array(["l0", "l1", "l2"]), centers[:3].astype(np.float32))
    assert sorted(p.split("_")[0] for p in pick("coreset", pool, 2)) == ["c3", "c4"]


def test_blocked_distances_equal_direct_ones():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(300, 8)), rng.normal(size=(70, 8))
    direct = ((x[:, None] - c[None]) ** 2).sum(-1).min(1)  # (300,)
    np.testing.assert_allclose(min_squared_distances(x, c, block_elements=50), direct, atol=1e-4)
    p, q = rng.dirichlet(np.ones(3), 50), rng.dirichlet(np.ones(3), 20)
    np.testing.assert_allclose(nearest_symmetric_kl(p, q, block_elements=7), symmetric_kl(p, q).min(1))


def test_cdal_distribution_and_distance_hand_computed():
    det = dets([[0.8, 0.2, 0.0], [0.0, 0.5, 0.5]], scores=[0.75, 0.25])  # rows rescale to (.8,.2,0), (0,.5,.5)
    p = image_class_distributions([det, Detections.empty(3)], 3, smoothing=0.0)
    np.testing.assert_allclose(p, [[0.6, 0.275, 0.125], [1 / 3, 1 / 3, 1 / 3]])
    a, b = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    kl_ab, kl_ba = (0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)), (0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5))
    np.testing.assert_allclose(symmetric_kl(a, b), [[0.5 * (kl_ab + kl_ba)]])
    assert symmetric_kl(b, b)[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_enms_hand_computed():
    overlap = [[0, 0, 10, 10], [1, 0, 11, 10]]  # IoU 9/11 > 0.5
    apart = [[0, 0, 10, 10], [50, 50, 60, 60]]
    h_flat, h_pair = np.log(3), np.log(2)
    same_class_overlap = dets([FLAT, PAIR], boxes=overlap, classes=[1, 1])
    other_class_overlap = dets([FLAT, PAIR], boxes=overlap, classes=[1, 2])
    same_class_apart = dets([FLAT, PAIR], boxes=apart, classes=[1, 1])
    mostly_class_two = dets([PAIR, PAIR, FLAT], boxes=[[0, 0, 5, 5], [20, 20, 25, 25], [40, 40, 45, 45]],
                            classes=[2, 2, 0])
    scores, dominant = enms_scores([same_class_overlap, other_class_overlap, same_class_apart, mostly_class_two,
                                    Detections.empty(3)], 3)
    np.testing.assert_allclose(scores, [h_flat, h_flat + h_pair, h_flat + h_pair, 2 * h_pair + h_flat, 0.0])
    assert dominant.tolist() == [1, 1, 1, 2, NO_CLASS]


def _duplicates_pool(seed=0, n_dup=10, n_other=30):
    """n_dup near-identical copies of the most uncertain image, plus varied, slightly less uncertain ones."""
    rng = np.random.default_rng(seed)
    base_emb = rng.normal(size=16)
    dup_dets = dets([FLAT, [0.3, 0.4, 0.3], FLAT, PAIR], boxes=[[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9],
                                                                  [60, 0, 69, 9]])
    detections, emb = {}, []
    for i in range(n_dup):
        detections[f"dup{i}"] = dup_dets
        emb.append(base_emb + rng.normal(0, 0.01, 16))
    for i in range(n_other):
        other = random_detections(rng, int(rng.integers(1, 5)), 3)
        detections[f"other{i}"] = other
        emb.append(rng.normal(size=16))
    return view(detections, np.array(emb))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diversity_strategies_avoid_duplicates(seed):
    pool = _duplicates_pool(seed)
    count = {name: sum(i.startswith("dup") for i in pick(name, pool, 8, seed))
             for name in ("entropy_sum", "entropy_mean", "cdal", "ebal")}
    assert count["entropy_sum"] >= 6 and count["entropy_mean"] >= 6  # pure ranking takes the copies
    assert count["cdal"] <= 1 and count["ebal"] == 1


def test_ebal_fills_the_batch_with_skipped_images():
    pool = _duplicates_pool(n_other=0)  # nothing but duplicates: the diversity rule skips all but one
    assert sorted(pick("ebal", pool, 10)) == sorted(pool.unlabeled_ids.tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_typiclust_covers_every_cluster_before_repeating(seed):
    ids, emb, _ = _clusters(seed=seed)
    pool = PoolView(ids, emb, np.array([]), np.zeros((0, 8), np.float32))
    assert sorted(p.split("_")[0] for p in pick("typiclust", pool, 5, seed)) == ["c0", "c1", "c2", "c3", "c4"]
    ids, emb, _ = _clusters(per_cluster=30, seed=seed)
    pool = PoolView(ids, emb, np.array([]), np.zeros((0, 8), np.float32))
    eight = [p.split("_")[0] for p in pick("typiclust", pool, 8, seed)]  # 8 k-means clusters inside 5 true ones
    assert set(eight) == {"c0", "c1", "c2", "c3", "c4"} and max(eight.count(c) for c in set(eight)) <= 2


def test_typiclust_leaves_tiny_clusters_for_last():
    ids, emb, _ = _clusters(per_cluster=10)
    tiny = np.random.default_rng(9).normal(0, 0.1, (3, 8)) + 500  # 3 images far from the rest: a cluster of 3
    pool = PoolView(np.array([*ids, "t_0", "t_1", "t_2"]), np.concatenate([emb, tiny]).astype(np.float32),
                    np.array([]), np.zeros((0, 8), np.float32))
    picked = [p.split("_")[0] for p in pick("typiclust", pool, 6)]  # 6 clusters: the 5 true ones and the tiny one
    assert sorted(picked[:5]) == ["c0", "c1", "c2", "c3", "c4"] and "t" not in picked  # as the paper drops it


def test_typiclust_counts_labeled_images_as_coverage():
    ids, emb, centers = _clusters()
    pool = PoolView(ids, emb, np.array(["l0", "l1", "l2"]), centers[:3].astype(np.float32))
    assert sorted(p.split("_")[0] for p in pick("typiclust", pool, 2)) == ["c3", "c4"]


def test_typiclust_takes_the_dense_core_not_the_outlier():
    rng = np.random.default_rng(0)
    core = rng.normal(0, 0.1, (25, 4))
    outliers = 3 * np.eye(4)[rng.integers(0, 4, 5)] * rng.choice([-1, 1], (5, 1))
    ids = np.array([f"core{i}" for i in range(25)] + [f"out{i}" for i in range(5)])
    pool = PoolView(ids, np.concatenate([core, outliers]).astype(np.float32), np.array([]), np.zeros((0, 4), np.float32))
    assert all(pick("typiclust", pool, 1, seed)[0].startswith("core") for seed in range(3))
    assert pick("coreset", pool, 2, 0)[1].startswith("out")  # farthest-first goes the other way


def test_typicality_hand_computed(monkeypatch):
    x = np.array([[0.0], [1.0], [3.0], [10.0]])  # m // 2 = 2 neighbours each
    mean_nn = [(1 + 3) / 2, (1 + 2) / 2, (2 + 3) / 2, (7 + 9) / 2]
    np.testing.assert_allclose(typicality(x), 1 / (np.array(mean_nn) + 1e-8))
    np.testing.assert_allclose(typicality(x, k_nn=1), 1 / (np.array([1, 1, 2, 7]) + 1e-8))
    assert typicality(x[:1]).tolist() == [1.0]
    x = np.random.default_rng(0).normal(size=(50, 3))
    whole = typicality(x)
    monkeypatch.setattr(importlib.import_module("mgral_core.strategies.typiclust"), "_BLOCK_ROWS", 7)
    np.testing.assert_allclose(typicality(x), whole)  # blocks of 7 rows give the same values
