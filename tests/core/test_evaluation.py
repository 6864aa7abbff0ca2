"""Our COCO mAP equals pycocotools' on the same predictions, and hand-computed cases hold."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mgral_core.detections import Detections
from mgral_core.evaluation import box_iou, evaluate_detections

NO_GT_IMAGE, EMPTY_PRED_IMAGE, CROWDED_IMAGE = "im3", "im5", "im7"


def _scene(rng, num_classes, n_images=50):
    """Realistic-ish ground truth and noisy predictions; the last class never appears in the truth."""
    truth, preds = {}, {}
    for i in range(n_images):
        name = f"im{i}"
        n = 0 if name == NO_GT_IMAGE else int(rng.integers(1, 7))
        xy = rng.uniform(0, 120, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 60, (n, 2))], 1).astype(np.float32)
        classes = rng.integers(0, num_classes - 1, n)
        truth[name] = (boxes, classes)
        if name == EMPTY_PRED_IMAGE:
            preds[name] = Detections.empty(num_classes)
            continue
        keep = rng.random(n) < 0.8
        noisy = boxes[keep] + rng.normal(0, 3, (keep.sum(), 4)).astype(np.float32)
        labels = np.where(rng.random(keep.sum()) < 0.85, classes[keep], rng.integers(0, num_classes, keep.sum()))
        extra = 130 if name == CROWDED_IMAGE else int(rng.integers(0, 4))  # false positives; > maxDets in one image
        fxy = rng.uniform(0, 120, (extra, 2))
        fboxes = np.concatenate([fxy, fxy + rng.uniform(4, 40, (extra, 2))], 1)
        all_boxes = np.concatenate([noisy, fboxes]).astype(np.float32)
        all_boxes[:, 2:] = np.maximum(all_boxes[:, 2:], all_boxes[:, :2] + 1)
        extra_labels = np.zeros(extra, np.int64) if name == CROWDED_IMAGE else rng.integers(0, num_classes, extra)
        scores = rng.uniform(0.05, 1, len(all_boxes)).round(2)  # rounding makes score ties common
        if name == CROWDED_IMAGE:
            scores[len(noisy):] = rng.uniform(0.01, 0.3, extra).round(2)  # clutter scores low, as in practice
        preds[name] = Detections(all_boxes, scores.astype(np.float32),
                                 np.concatenate([labels, extra_labels]).astype(np.int64))
    return truth, preds


def _pycocotools(truth, preds, num_classes, tmp_path):
    """(mAP50-95, mAP50, per-class AP50-95 with NaN for absent classes) from COCOeval on COCO JSON files."""
    ids = {name: i + 1 for i, name in enumerate(truth)}
    gt = {"images": [{"id": i, "width": 200, "height": 200} for i in ids.values()], "annotations": [],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    for name, (boxes, classes) in truth.items():
        for b, c in zip(boxes.tolist(), classes.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": ids[name], "category_id": c + 1,
                                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                      "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
    dt = [{"image_id": ids[name], "category_id": c + 1, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
          for name, det in preds.items()
          for b, s, c in zip(det.boxes_xyxy.tolist(), det.scores.tolist(), det.classes.tolist())]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", maxDets 100
    per_class = np.array([precision[:, :, k][precision[:, :, k] > -1].mean() if (precision[:, :, k] > -1).any()
                          else np.nan for k in range(num_classes)])
    return evaluator.stats[0], evaluator.stats[1], per_class


@pytest.mark.parametrize("seed, num_classes", [(0, 3), (1, 4), (2, 5)])
def test_matches_pycocotools(seed, num_classes, tmp_path):
    truth, preds = _scene(np.random.default_rng(seed), num_classes)
    assert len(truth[NO_GT_IMAGE][0]) == 0 and len(preds[NO_GT_IMAGE]) > 0  # its detections are all false positives
    assert len(preds[EMPTY_PRED_IMAGE]) == 0 and len(truth[EMPTY_PRED_IMAGE][0]) > 0
    assert (preds[CROWDED_IMAGE].classes == 0).sum() > 100  # maxDets truncation is exercised
    ours = evaluate_detections(truth, preds, num_classes=num_classes)
    ref50_95, ref50, ref_per_class = _pycocotools(truth, preds, num_classes, tmp_path)
    assert abs(ours.map50_95 - ref50_95) < 1e-3
    assert abs(ours.map50 - ref50) < 1e-3
    np.testing.assert_allclose(ours.per_class_map50_95, ref_per_class, atol=1e-3)  # NaN where NaN
    assert np.isnan(ours.per_class_map50_95[num_classes - 1]) and np.isnan(ours.per_class_map50[num_classes - 1])
    assert ours.images == 50
    assert 0.05 < ours.map50_95 < 0.95 and ours.map50 > ours.map50_95  # a non-trivial case


def test_box_iou_has_no_plus_one():
    a = np.array([[0, 0, 10, 10]], np.float64)
    b = np.array([[5, 0, 15, 10], [10, 10, 20, 20], [3, 3, 3, 8]], np.float64)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 0.0]])


def test_hand_computed_cases():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 50]], np.float32)
    truth = {"a": (boxes, np.array([0, 1]))}
    perfect = {"a": Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1]))}
    result = evaluate_detections(truth, perfect, 2)
    assert result.map50_95 == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert evaluate_detections(truth, {}, 2).map50_95 == 0.0

    # one box at IoU 0.625 is a true positive at thresholds 0.50, 0.55, 0.60 only: AP50-95 = 3/10
    shifted = {"a": Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 38.75]], np.float32),
                               np.array([0.9, 0.8], np.float32), np.array([0, 1]))}
    result = evaluate_detections(truth, shifted, 2)
    np.testing.assert_allclose(result.per_class_map50_95, [1.0, 0.3])
    assert result.map50 == pytest.approx(1.0)

    # a false positive ranked above the true positive: precision 1/2 at every recall point
    fp_first = {"a": Detections(np.array([[60, 60, 70, 70], [0, 0, 10, 10]], np.float32),
                                np.array([0.9, 0.5], np.float32), np.array([0, 0]))}
    result = evaluate_detections({"a": (boxes[:1], np.array([0]))}, fp_first, 2)
    assert result.map50_95 == pytest.approx(0.5, abs=1e-6) and np.isnan(result.per_class_map50_95[1])


def test_rejects_out_of_range_classes():
    truth = {"a": (np.array([[0, 0, 5, 5]], np.float32), np.array([2]))}
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 2\)"):
        evaluate_detections(truth, {}, 2)
