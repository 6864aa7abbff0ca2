"""The registered YOLO's input handling: paths, RGB arrays, stacks, DataFrames; anything else named in the error."""

import numpy as np
import pandas as pd
import pytest

from mgral_backends import DetectorError, serving_frame
from mgral_backends.ultralytics.detector import read_bgr
from mgral_backends.ultralytics.serving import _images
from mgral_core.detections import Detections


def test_inputs_are_named_by_path_or_position():
    rgb = np.zeros((8, 6, 3), np.uint8)
    assert _images("a.png") == (["a.png"], ["a.png"])
    names, images = _images(["a.png", rgb])
    assert names == ["a.png", "array[1]"] and images[1] is rgb
    assert _images(np.zeros((2, 8, 6, 3), np.uint8))[0] == ["array[0]", "array[1]"]
    assert _images(pd.DataFrame({"image": ["a.png", "b.png"]}))[0] == ["a.png", "b.png"]
    with pytest.raises(TypeError, match="predict input 1: expected an image path or an .* got int"):
        _images(["a.png", 3])
    with pytest.raises(TypeError, match="got dict"):
        _images({"image": "a.png"})


def test_arrays_are_rgb_and_must_be_uint8_hwc():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert read_bgr(rgb)[0, 0].tolist() == [0, 0, 200]  # what cv2.imread gives for a red pixel
    with pytest.raises(DetectorError, match=r"must be \(H, W, 3\) uint8 RGB, got shape \(4, 5, 3\) dtype float32"):
        read_bgr(rgb.astype(np.float32))
    with pytest.raises(DetectorError, match="got shape \\(4, 5\\)"):
        read_bgr(rgb[..., 0])


def test_the_frame_has_one_row_per_box_with_class_names():
    found = Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.9, 0.2], np.float32),
                       np.array([1, 0]))
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    frame = serving_frame(["a.png", "array[1]"], [found, empty], ["cat", "dog"])
    assert frame.to_dict("list") == {"image": ["a.png", "a.png"], "class": ["dog", "cat"],
                                     "score": pytest.approx([0.9, 0.2]), "x1": [1.0, 5.0], "y1": [2.0, 6.0],
                                     "x2": [3.0, 7.0], "y2": [4.0, 8.0]}
    assert list(serving_frame([], [], ["cat"]).columns) == ["image", "class", "score", "x1", "y1", "x2", "y2"]
