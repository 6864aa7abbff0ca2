"""Our COCO mAP equals pycocotools' on the same predictions."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mgral_core.detections import Detections
from mgral_core.evaluation import evaluate_detections


def _scene(rng, n_images=50, num_classes=4):
    truth, preds = {}, {}
    for i in range(n_images):
        n = int(rng.integers(0, 6)) if i != 3 else 0  # image 3: no ground truth at all
        xy = rng.uniform(0, 120, (n, 2))
        wh = rng.uniform(4, 60, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        classes = rng.integers(0, num_classes - 1, n)  # the last class never appears
        truth[f"im{i}"] = (boxes, classes)
        if i == 5:  # image 5: the detector finds nothing
            preds[f"im{i}"] = Detections.empty(num_classes)
            continue
        keep = rng.random(n) < 0.8
        noisy = boxes[keep] + rng.normal(0, 4, (keep.sum(), 4)).astype(np.float32)
        labels = np.where(rng.random(keep.sum()) < 0.85, classes[keep], rng.integers(0, num_classes, keep.sum()))
        extra = int(rng.integers(0, 4))  # false positives
        fxy = rng.uniform(0, 120, (extra, 2))
        fboxes = np.concatenate([fxy, fxy + rng.uniform(4, 40, (extra, 2))], 1).astype(np.float32)
        all_boxes = np.concatenate([noisy, fboxes]).astype(np.float32)
        all_boxes[:, 2:] = np.maximum(all_boxes[:, 2:], all_boxes[:, :2] + 1)
        preds[f"im{i}"] = Detections(all_boxes, rng.uniform(0.05, 1, len(all_boxes)).astype(np.float32),
                                     np.concatenate([labels, rng.integers(0, num_classes, extra)]).astype(np.int64))
    return truth, preds


def _pycocotools(truth, preds, num_classes, tmp_path):
    ids = {name: i + 1 for i, name in enumerate(truth)}
    gt = {"images": [{"id": i, "width": 200, "height": 200} for i in ids.values()], "annotations": [],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    dt = []
    for name, (boxes, classes) in truth.items():
        for b, c in zip(boxes.tolist(), classes.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": ids[name], "category_id": c + 1,
                                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                      "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
    for name, det in preds.items():
        for b, s, c in zip(det.boxes_xyxy.tolist(), det.scores.tolist(), det.classes.tolist()):
            dt.append({"image_id": ids[name], "category_id": c + 1, "score": s,
                       "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco, coco.loadRes(dt), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[0], evaluator.stats[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools(seed, tmp_path):
    rng = np.random.default_rng(seed)
    truth, preds = _scene(rng)
    ours = evaluate_detections(truth, preds, num_classes=4)
    ref50_95, ref50 = _pycocotools(truth, preds, 4, tmp_path)
    assert abs(ours.map50_95 - ref50_95) < 1e-3
    assert abs(ours.map50 - ref50) < 1e-3
    assert np.isnan(ours.per_class_map50_95[3])  # absent class left out, as COCO does
    assert 0.05 < ours.map50_95 < 0.95  # a non-trivial case


def test_perfect_and_empty_predictions():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 50]], np.float32)
    truth = {"a": (boxes, np.array([0, 1]))}
    perfect = {"a": Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1]))}
    assert evaluate_detections(truth, perfect, 2).map50_95 == pytest.approx(1.0)
    assert evaluate_detections(truth, {}, 2).map50_95 == 0.0
