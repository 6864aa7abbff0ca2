"""Record values read from a batch's detections (no training): expected objects, and the per-class log gain."""

import numpy as np
import pytest

from mgral_core.detections import Detections, class_gain, expected_class_counts, expected_objects


def _detections(scores, classes, probs=None):
    n = len(scores)
    return Detections(np.zeros((n, 4), np.float32), np.asarray(scores, np.float32), np.asarray(classes, np.int64),
                      None if probs is None else np.asarray(probs, np.float32))


def test_expected_objects_is_the_mean_per_image_of_scores_above_the_floor():
    one = _detections([0.9, 0.3, 0.01], [0, 1, 2])
    assert expected_objects([one, Detections.empty()], 0.05) == pytest.approx(0.6)  # (0.9 + 0.3 + 0) / 2 images
    assert expected_objects([], 0.05) == 0.0


def test_expected_class_counts_sum_class_probabilities_or_the_score_of_the_predicted_class():
    with_probs = _detections([0.8, 0.02], [1, 0], [[0.1, 0.8, 0.0], [0.02, 0.0, 0.0]])
    without = _detections([0.5, 0.6], [2, 2])
    counts = expected_class_counts([with_probs, without], 0.05, 3)
    assert counts == pytest.approx([0.1, 0.8, 1.1])  # the 0.02 box is under the floor


def test_class_gain_is_concave_per_class_and_favours_classes_the_labeled_set_lacks():
    labeled = np.array([10.0, 0.0])
    rare, common = class_gain(labeled, np.array([0.0, 3.0])), class_gain(labeled, np.array([3.0, 0.0]))
    assert rare > common > 0 and class_gain(labeled, np.zeros(2)) == 0.0
    assert rare == pytest.approx(np.log(4.0) / 2)
    once = class_gain(labeled, np.array([0.0, 3.0]))
    twice = class_gain(labeled, np.array([0.0, 6.0]))
    assert twice - once < once  # the second three objects of a class add less than the first three
    spread = class_gain(labeled, np.array([3.0, 3.0]))
    assert spread > twice - once  # objects of two classes beat more of one
    with pytest.raises(ValueError, match="class counts differ in length: \\(2,\\) labeled, \\(3,\\) in the batch"):
        class_gain(labeled, np.zeros(3))


def test_detection_value_of_a_pool_gives_every_batch_the_value_of_the_batch_functions():
    """DetectionValue (the reward of `reward.estimator: exact`) equals expected_objects / class_gain on any batch."""
    from mgral_core.detections import DetectionValue

    rng = np.random.default_rng(0)
    pool = {}
    for i in range(30):
        n = int(rng.integers(0, 5))
        probs = rng.uniform(0, 1, (n, 3))
        pool[f"img{i:02d}"] = _detections(probs.max(1), probs.argmax(1), probs if i % 2 else None)
    labeled = np.array([4.0, 0.0, 9.0])
    objects = DetectionValue(pool, "expected_objects", 0.05)
    gain = DetectionValue(pool, "class_gain", 0.05, 3, labeled)
    for _ in range(5):
        batch = rng.choice(sorted(pool), 7, replace=False).tolist()
        assert objects(batch) == pytest.approx(expected_objects([pool[i] for i in batch], 0.05))
        assert gain(batch) == pytest.approx(class_gain(labeled, expected_class_counts([pool[i] for i in batch],
                                                                                      0.05, 3)))
    assert objects([]) == 0.0
    with pytest.raises(KeyError, match="no detections for image 'other'"):
        gain(["img00", "other"])
    with pytest.raises(ValueError, match="class_gain needs L's labeled counts for 3 classes"):
        DetectionValue(pool, "class_gain", 0.05, 3)
    with pytest.raises(ValueError, match="unknown detection value 'objects'"):
        DetectionValue(pool, "objects", 0.05)
