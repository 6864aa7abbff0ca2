"""Label Studio: the batch exporter (tasks with pre-annotations, labeling config) and the reader of its JSON export."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import quoteattr

from mgral_core.detections import Detections
from mgral_formats.common import AnnotationEntry, ExportBatch, FormatError, is_number

FROM_NAME, TO_NAME = "label", "image"


class LabelStudioFormatError(FormatError):
    """A Label Studio export cannot be used as a whole.

    No current check raises it: a malformed task becomes an entry problem, reported with the others.
    """


def label_studio_config(class_names: Sequence[str]) -> str:
    """RectangleLabels labeling config with the project's classes."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n</View>\n')


def label_studio_task(image_id: str, rel_file: str, width: int, height: int, det: Detections,
                      class_names: Sequence[str], model_version: str) -> dict:
    """One task whose pre-annotation is the detector's boxes (percent coordinates, as Label Studio wants)."""
    result = []
    for (x1, y1, x2, y2), cls, score in zip(det.boxes_xyxy.tolist(), det.classes.tolist(), det.scores.tolist()):
        result.append({
            "id": f"{image_id}_{len(result)}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0, "score": round(score, 4),
            "value": {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width,
                      "height": 100 * (y2 - y1) / height, "rotation": 0, "rectanglelabels": [class_names[cls]]},
        })
    mean_score = float(det.scores.mean()) if len(det) else 0.0
    return {"data": {"image": f"/data/local-files/?d={rel_file}", "mgral_id": image_id},
            "predictions": [{"model_version": model_version, "score": round(mean_score, 4), "result": result}]}


def export_label_studio(batch: ExportBatch, out_dir: Path) -> None:
    """label_studio_tasks.json (one task per image, pre-annotated) and label_studio_config.xml."""
    tasks = [label_studio_task(image.image_id, image.file, image.width, image.height, image.prelabels,
                               batch.class_names, batch.model_version) for image in batch.images]
    (out_dir / "label_studio_tasks.json").write_text(json.dumps(tasks, indent=1))
    (out_dir / "label_studio_config.xml").write_text(label_studio_config(batch.class_names))


def _image_ref(task: dict) -> str:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    if data.get("mgral_id"):
        return str(data["mgral_id"])
    url = str(data.get("image", ""))
    query = parse_qs(urlparse(url).query)
    path = unquote(query["d"][0]) if "d" in query else unquote(urlparse(url).path)
    return path


def read_label_studio_annotations(path: Path, tasks: list) -> list[AnnotationEntry]:
    """One entry per annotated task of a parsed export (boxes in percent with the original size).

    Tasks without a (non-cancelled) annotation are skipped: they stay pending. The last annotation
    of a task wins; non-rectangle results are ignored.
    """
    entries = []
    for number, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("annotations", []), list):
            entries.append(AnnotationEntry(f"{path.name} task #{number}", "", [], [],
                                           problem="not a Label Studio task (an object with 'data' and 'annotations')"))
            continue
        annotations = [a for a in task.get("annotations", []) if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            continue  # not labeled yet: stays pending
        where = f"{path.name} task {task.get('id', number)}"
        result = annotations[-1].get("result", [])
        if not isinstance(result, list):
            entries.append(AnnotationEntry(where, _image_ref(task), [], [], problem="'result' is not a list"))
            continue
        boxes, classes = [], []
        for item in result:
            if not isinstance(item, dict) or item.get("type") != "rectanglelabels":
                continue
            v = item.get("value") if isinstance(item.get("value"), dict) else {}
            w, h = item.get("original_width"), item.get("original_height")
            labels = v.get("rectanglelabels")
            if not all(is_number(v.get(k)) for k in ("x", "y", "width", "height")):
                boxes.append(None)
                classes.append("<rectangle needs numeric x, y, width, height (percent of the image)>")
            elif is_number(v.get("rotation")) and abs(v["rotation"]) > 1e-6:
                boxes.append(None)
                classes.append(f"<rotated rectangle (rotation {v['rotation']}) is not supported; "
                               "draw axis-aligned boxes>")
            elif not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
                boxes.append(None)
                classes.append("<rectangle without a label>")
            else:
                boxes.append((v["x"], v["y"], v["width"], v["height"], w, h))
                classes.append(labels[0])
        entries.append(AnnotationEntry(where, _image_ref(task), boxes, classes))
    return entries
