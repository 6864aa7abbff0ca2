"""Task-aware descriptors see the detector's classes and confusion, and the reward estimator's distances use them."""

import numpy as np
import pytest

from mgral_core.detections import Detections
from mgral_core.image_descriptors import class_mass, entropy_stats, principal_components, task_aware_descriptors
from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_core.reward import RewardEstimator


def detections(probs):
    probs = np.asarray(probs, np.float32).reshape(-1, 3)
    boxes = np.tile(np.array([[0, 0, 5, 5]], np.float32), (len(probs), 1))
    return Detections(boxes, probs.max(1) if len(probs) else np.zeros(0, np.float32),
                      probs.argmax(1).astype(np.int64) if len(probs) else np.zeros(0, np.int64), probs)


def test_class_mass_and_entropy_per_image():
    d = detections([[0.9, 0.1, 0.0], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(class_mass(d, 3), [1.0, 0.2, 0.8], rtol=1e-6)
    assert class_mass(detections([]), 3).tolist() == [0, 0, 0] and entropy_stats(detections([])) == (0.0, 0.0)
    sure, confused = entropy_stats(detections([[1.0, 0.0, 0.0]])), entropy_stats(detections([[0.5, 0.5, 0.5]]))
    assert sure == (0.0, 0.0) and confused[0] == pytest.approx(np.log(3))
    no_probs = Detections(d.boxes_xyxy, np.array([0.6, 0.3], np.float32), np.array([2, 2]), None)
    np.testing.assert_allclose(class_mass(no_probs, 3), [0, 0, 0.9], rtol=1e-6)  # scores on the predicted class
    with pytest.raises(ValueError, match="class_probs have 3 classes, the project 4"):
        class_mass(d, 4)


def test_descriptors_are_standardised_columns_with_a_deterministic_pca():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 16)) * np.r_[10.0, np.full(15, 1.0)]  # axis 0 has by far the largest variance
    dets = [detections(rng.dirichlet(np.ones(3), int(rng.integers(0, 4)))) for _ in range(50)]
    out = task_aware_descriptors(emb, dets, 3, pca_dims=4)
    assert out.shape == (50, 3 + 2 + 4) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1, rtol=1e-4)
    pcs = principal_components(emb, 2)
    assert abs(np.corrcoef(pcs[:, 0], emb[:, 0])[0, 1]) > 0.95
    np.testing.assert_array_equal(pcs, principal_components(emb.copy(), 2))
    np.testing.assert_allclose(np.abs(principal_components(-emb, 2)), np.abs(pcs), atol=1e-9)  # signs fixed per axis
    empty = task_aware_descriptors(emb, [detections([])] * 50, 3, pca_dims=0)
    assert empty.shape == (50, 5) and not empty.any()  # constant columns become zeros, not NaN
    with pytest.raises(ValueError, match="need embeddings"):
        task_aware_descriptors(emb, dets[:3], 3)


def test_the_estimator_compares_batches_by_their_features_when_given_them():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    features = np.zeros((40, 2), np.float32)
    features[20:, 0] = 5.0  # images 20..39 hold a class the embeddings do not show
    ids = np.arange(40).astype(str)
    features_of = lambda batch: features[np.asarray(batch).astype(int)]  # noqa: E731
    records = [LookupRecord(f"record_{i}", ids[rows], emb[rows], value) for i, (rows, value) in
               enumerate([(np.arange(0, 10), 0.1), (np.arange(20, 30), 0.9), (np.arange(10, 20), 0.1)])]
    by_features = RewardEstimator(LookupTable(records), features_of=features_of, fallback_rule="never")
    by_embedding = RewardEstimator(LookupTable(records), fallback_rule="never")
    query = np.arange(30, 40)  # the rare-class images: same kind of embedding as all others
    d = by_features.distances(features_of(ids[query]))
    assert d[1] == pytest.approx(0.0, abs=1e-6) and d[0] > 1
    assert by_features(ids[query], emb[query]) == pytest.approx(0.9)
    assert by_embedding(ids[query], emb[query]) < 0.9
