"""Sampled pseudo-labels (lookup_table.pseudo_labels: sampled): a box is kept with probability equal to its
score and takes a class drawn from its class probabilities; an image's draw depends on (seed, draw, id) only."""

import numpy as np
import pytest

from mgral_core.detections import Detections, sampled_labels


def detections(n=400, seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.sort(rng.uniform(0, 100, (n, 4)).astype(np.float32).reshape(n, 2, 2), 1).reshape(n, 4)
    probs = np.zeros((n, 3), np.float32)
    probs[:, 0], probs[:, 2] = 0.6, 0.2  # normalised: class 0 with 0.75, class 2 with 0.25, never class 1
    scores = np.linspace(0.0, 0.99, n).astype(np.float32)
    return Detections(boxes, scores, np.zeros(n, np.int64), probs)


def test_boxes_are_kept_with_their_score_and_classes_follow_the_probabilities():
    det = detections()
    kept_share, class_two = np.zeros(len(det)), []
    draws = 300
    for draw in range(draws):
        boxes, classes = sampled_labels(det, "img_7", draw, seed=5, floor=0.05)
        kept = np.isin(det.boxes_xyxy[:, 0], boxes[:, 0])
        kept_share += kept
        class_two.append((classes == 2).mean())
        assert not np.isin(classes, [1]).any()
    kept_share /= draws
    assert kept_share[det.scores < 0.05].max() == 0  # below the floor: never
    high = det.scores >= 0.05
    assert np.abs(kept_share[high] - det.scores[high]).mean() < 0.03
    assert np.mean(class_two) == pytest.approx(0.25, abs=0.02)


def test_an_images_draw_depends_only_on_seed_draw_and_id():
    det = detections(50)
    first = sampled_labels(det, "a", 0, 1, 0.05)
    np.testing.assert_array_equal(first[0], sampled_labels(det, "a", 0, 1, 0.05)[0])
    others = [sampled_labels(det, image, draw, seed, 0.05)[0] for image, draw, seed in
              (("b", 0, 1), ("a", 1, 1), ("a", 0, 2))]
    assert all(len(o) != len(first[0]) or not np.array_equal(o, first[0]) for o in others)


def test_without_class_probabilities_the_predicted_class_is_kept():
    det = detections(30)
    plain = Detections(det.boxes_xyxy, det.scores, np.full(30, 4, np.int64))
    _, classes = sampled_labels(plain, "x", 0, 0, 0.0)
    assert set(classes.tolist()) <= {4}
    empty = sampled_labels(Detections.empty(3), "x", 0, 0, 0.05)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)
