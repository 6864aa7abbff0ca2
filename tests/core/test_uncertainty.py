"""Uncertainty scores on hand-computed cases, and the pool-level vectorised scores against per-image ones."""

import numpy as np
import pytest

from mgral_core.detections import Detections
from mgral_core.uncertainty import (
    detection_entropy,
    entropy_scores,
    image_entropy,
    least_confidence,
    least_confidence_scores,
)


def _dets(probs, scores=None):
    probs = np.asarray(probs, np.float32).reshape(-1, 3)
    n = len(probs)
    scores = probs.max(1) if scores is None else np.asarray(scores, np.float32)
    return Detections(np.tile(np.array([[0, 0, 4, 4]], np.float32), (n, 1)), scores,
                      probs.argmax(1).astype(np.int64) if n else np.zeros(0, np.int64), probs)


def test_detection_entropy_hand_computed():
    probs = np.array([[1 / 3, 1 / 3, 1 / 3],  # uniform: log 3
                      [0.9, 0.0, 0.0],  # one class: 0
                      [0.5, 0.5, 0.0],  # two equal classes: log 2
                      [0.02, 0.02, 0.0],  # rows are rescaled, so low sigmoid scores also give log 2
                      [0.6, 0.2, 0.2]])  # 0.6, 0.2, 0.2 after rescaling -> explicit formula
    expected = [np.log(3), 0.0, np.log(2), np.log(2), -(0.6 * np.log(0.6) + 2 * 0.2 * np.log(0.2))]
    np.testing.assert_allclose(detection_entropy(probs), expected, atol=1e-12)
    assert detection_entropy(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="non-negative"):
        detection_entropy(np.array([[0.5, -0.1]]))


def test_image_aggregates_hand_computed():
    det = _dets([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.9, 0.0, 0.0]])
    h = [np.log(3), np.log(2), 0.0]
    assert image_entropy(det, "mean") == pytest.approx(np.mean(h))
    assert image_entropy(det, "sum") == pytest.approx(np.sum(h))
    assert image_entropy(det, "max") == pytest.approx(np.log(3))
    assert least_confidence(_dets([[0.9, 0, 0], [0, 0.4, 0]], scores=[0.9, 0.4])) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown reduction 'median'"):
        image_entropy(det, "median")


def test_images_without_detections():
    for empty in (Detections.empty(3), Detections.empty()):
        assert image_entropy(empty, "mean") == image_entropy(empty, "sum") == image_entropy(empty, "max") == 0.0
        assert least_confidence(empty) == 1.0
    no_probs = Detections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="no class_probs"):
        image_entropy(no_probs, "sum")


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_pool_scores_equal_per_image_scores(reduce):
    rng = np.random.default_rng(0)
    pool = [_dets(rng.dirichlet(np.ones(3), n)) for n in [0, 3, 1, 0, 0, 5, 2, 0]]
    vectorised = entropy_scores(pool, reduce)
    looped = [float(np.mean(h) if reduce == "mean" else getattr(np, reduce)(h)) if len(h) else 0.0
              for h in (detection_entropy(det.class_probs) for det in pool)]
    np.testing.assert_allclose(vectorised, looped, atol=1e-12)
    np.testing.assert_allclose(least_confidence_scores(pool), [least_confidence(d) for d in pool])
    assert entropy_scores([Detections.empty(3)] * 4, reduce).tolist() == [0.0] * 4
