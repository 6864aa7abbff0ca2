"""The "finds nothing" rule: validation mAP50-95 under NEAR_ZERO_MAP, or no box at all on the pool."""

import numpy as np

from mgral_core.detections import Detections
from mgral_workspace.detector_health import NEAR_ZERO_MAP, detector_warnings
from mgral_workspace.inference_cache import InferenceResult, save_inference


def _inference(path, boxes_per_image):
    detections = [Detections(np.tile([[1, 1, 5, 5]], (n, 1)).astype(np.float32), np.full(n, 0.3, np.float32),
                             np.zeros(n, np.int64)) for n in boxes_per_image]
    ids = np.asarray([f"i{k}" for k in range(len(boxes_per_image))])
    return save_inference(path, InferenceResult(ids, np.zeros((len(ids), 4), np.float32), detections))


def test_near_zero_map_or_an_empty_pool_prediction_warns_with_what_helps(tmp_path):
    assert NEAR_ZERO_MAP == 0.005
    assert detector_warnings(0.0051) == [] and detector_warnings(0.3, _inference(tmp_path / "a.npz", [0, 2])) == []
    (low,) = detector_warnings(0.0049)
    assert "validation mAP50-95 0.0049 is below 0.005" in low
    assert all(k in low for k in ("pretrained start", "detector.model", "more epochs", "more labels"))
    assert len(detector_warnings(float("nan"))) == 1  # a NaN mAP is no mAP
    (blind,) = detector_warnings(0.2, _inference(tmp_path / "b.npz", [0, 0, 0]))
    assert "no box on any of its 3 images" in blind
    assert len(detector_warnings(0.0, _inference(tmp_path / "c.npz", [0]))) == 2
