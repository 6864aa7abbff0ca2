"""The pretraining set is disjoint from the built-in dataset, deterministic, and refuses stale reuse."""

import numpy as np
import cv2
import pytest

from mgral_workspace.pretrain_data import (PRETRAIN_CLASSES, SHAPE_CLASSES, PretrainSpec, _shape_polygon,
                                           pretrain_dataset, render_image)
from mgral_workspace.synthetic import DEFAULT_CLASSES, _shape_points


def _mask(points: np.ndarray) -> np.ndarray:
    """Filled polygon, centred and scaled to a fixed area, so that only the shape is compared."""
    points = points - points.mean(0)
    points = points / np.sqrt(abs(cv2.contourArea(points.astype(np.float32)))) * 60 + 100
    mask = np.zeros((200, 200), np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def _best_iou(points: np.ndarray) -> tuple[float, str]:
    own = _mask(points)
    best = (0.0, "")
    for name in DEFAULT_CLASSES:
        for angle in np.linspace(0, 2 * np.pi, 72, endpoint=False):
            other = _mask(_shape_points(name, 0, 0, 100, angle))
            best = max(best, ((own & other).sum() / (own | other).sum(), name))
    return best


def test_no_pretraining_class_is_a_builtin_class():
    names = {n.lower() for n in PRETRAIN_CLASSES}
    assert not names & {n.lower() for n in DEFAULT_CLASSES}
    assert not any(builtin in name for name in names for builtin in DEFAULT_CLASSES)


@pytest.mark.parametrize("shape", SHAPE_CLASSES)
def test_no_pretraining_shape_is_a_builtin_shape(shape):
    iou, nearest = _best_iou(_shape_polygon(shape, 50, 0.0, np.random.default_rng(0)))
    assert iou < 0.95, f"{shape} looks like the built-in {nearest} (IoU {iou:.3f} at the best rotation)"


def test_the_shape_check_can_fail():
    # a built-in shape compared with the built-in set matches itself: the check above is not vacuous
    iou, nearest = _best_iou(_shape_points("hexagon", 0, 0, 100, 0.3))
    assert iou > 0.97 and nearest == "hexagon"


def test_images_have_boxes_inside_and_classes_in_range():
    rng = np.random.default_rng(3)
    spec = PretrainSpec(image_size=96)
    total = 0
    for _ in range(20):
        image, boxes, classes = render_image(spec, rng)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert ((boxes >= 0) & (boxes <= 96)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((classes >= 0) & (classes < len(PRETRAIN_CLASSES))).all()
        total += len(classes)
    assert total > 20


def test_same_seed_same_bytes_and_stale_reuse_is_refused(tmp_path):
    spec = PretrainSpec(seed=5, image_size=64, n_train=4, n_val=2)
    a, reused_a = pretrain_dataset(spec, tmp_path / "a")
    b, _ = pretrain_dataset(spec, tmp_path / "b")
    assert not reused_a
    for path in sorted((a / "images" / "train").iterdir()):
        assert path.read_bytes() == (b / "images" / "train" / path.name).read_bytes()
    assert pretrain_dataset(spec, a) == (a, True)
    with pytest.raises(ValueError, match=r"spec.json.*other settings \(n_train\)"):
        pretrain_dataset(PretrainSpec(seed=5, image_size=64, n_train=5, n_val=2), a)
