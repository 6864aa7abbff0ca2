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
    with pytest.raises(ValueError, match="class counts differ in shape: \\(2,\\) labeled, \\(3,\\) in the batch"):
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
    with pytest.raises(ValueError, match="class_gain needs L's labeled counts of shape \\(3,\\), got None"):
        DetectionValue(pool, "class_gain", 0.05, 3)
    with pytest.raises(ValueError, match="unknown detection value 'objects'"):
        DetectionValue(pool, "objects", 0.05)


def test_class_gain_per_group_values_objects_of_a_group_the_labeled_set_lacks():
    """class_gain_groups: one curve per (group, class), groups weighted by their share of the pool."""
    labeled = np.array([[10.0, 10.0], [0.0, 0.0]])  # L holds group 0 only
    weights = np.array([0.5, 0.5])
    same_class_group_1 = class_gain(labeled, np.array([[0.0, 0.0], [3.0, 0.0]]), weights)
    same_class_group_0 = class_gain(labeled, np.array([[3.0, 0.0], [0.0, 0.0]]), weights)
    assert same_class_group_1 > same_class_group_0 > 0
    assert same_class_group_1 == pytest.approx(0.5 * np.log(4.0) / 2)
    one_group = class_gain(labeled[:1], np.array([[3.0, 0.0]]), np.array([1.0]))
    assert one_group == pytest.approx(class_gain(labeled[0], np.array([3.0, 0.0])))  # one group = the plain gain
    with pytest.raises(ValueError, match="class counts of 2 groups need 2 group weights, got \\(3,\\)"):
        class_gain(labeled, np.zeros((2, 2)), np.ones(3) / 3)


def test_detection_value_with_groups_adds_each_image_to_its_group():
    from mgral_core.detections import DetectionValue

    rng = np.random.default_rng(1)
    pool = {}
    for i in range(20):
        probs = rng.uniform(0, 1, (int(rng.integers(1, 4)), 3))
        pool[f"img{i:02d}"] = _detections(probs.max(1), probs.argmax(1), probs)
    groups = np.array([i % 2 for i in range(20)])
    labeled = np.array([[4.0, 0.0, 9.0], [1.0, 2.0, 0.0]])
    gain = DetectionValue(pool, "class_gain", 0.05, 3, labeled, groups)
    batch = ["img00", "img01", "img03", "img06"]
    expected = np.stack([expected_class_counts([pool[i] for i in batch if int(i[3:]) % 2 == g], 0.05, 3)
                         for g in (0, 1)])
    assert gain(batch) == pytest.approx(class_gain(labeled, expected, np.array([0.5, 0.5])))
    # given weights (the pool's) win over the shares of the images the value was built over
    part = {i: pool[i] for i in batch}
    partial = DetectionValue(part, "class_gain", 0.05, 3, labeled, np.array([0, 1, 1, 0]), np.array([0.5, 0.5]))
    assert partial(batch) == pytest.approx(gain(batch))
    with pytest.raises(ValueError, match="groups must lie in \\[0, 2\\)"):
        DetectionValue(pool, "class_gain", 0.05, 3, labeled, groups + 1)
    with pytest.raises(ValueError, match="labeled counts of shape \\('G', 3\\), got \\(3,\\)"):
        DetectionValue(pool, "class_gain", 0.05, 3, labeled[0], groups)
    with pytest.raises(ValueError, match="groups has 3 entries for 20 images"):
        DetectionValue(pool, "class_gain", 0.05, 3, labeled, groups[:3])
