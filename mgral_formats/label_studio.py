"""Label Studio: the batch exporter (tasks with pre-annotations, labeling config) and the reader of its
JSON and JSON-MIN exports."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from xml.sax.saxutils import quoteattr

from mgral_core.detections import Detections
from mgral_formats.common import (
    IMAGE_SUFFIXES,
    AnnotationEntry,
    AnnotationSet,
    ExportBatch,
    FormatError,
    is_number,
    parse_image_reference,
)

FROM_NAME, TO_NAME = "label", "image"


class LabelStudioFormatError(FormatError):
    """A Label Studio export cannot be used as a whole (an empty list); a malformed task is an entry problem."""


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


# Reading exports ------------------------------------------------------------------------------------
#
# One rule picks the annotation of a task that has several: the completed ones (not `was_cancelled`,
# not `skipped`) are ordered by `updated_at` (else `created_at`), then by annotation id, then by their
# place in the export, and the last wins; the choice is reported. Results become boxes: rectangles
# (a rotated one as the box around it), polygons (their bounding box), ellipses (the box around
# them), each with exactly one label from its own `*labels` list or from `labels` results of the same
# region id. A region without a box (keypoint, brush) refuses its task; per-image results (choices,
# text) are ignored and reported.

_REGION_TYPES = {"rectanglelabels": "rectangle", "rectangle": "rectangle", "polygonlabels": "polygon",
                 "polygon": "polygon", "ellipselabels": "ellipse", "ellipse": "ellipse", "labels": None}
_NO_BOX_TYPES = {"keypointlabels", "keypoint", "brushlabels", "brush", "magicwand", "bitmasklabels", "bitmask",
                 "polylinelabels", "polyline"}
_NOT_REGIONS = {"choices", "textarea", "rating", "number", "datetime", "taxonomy", "relation", "pairwise", "ranker",
                "list", "hypertextlabels", "paragraphlabels"}
_MIN_META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "mgral_id",
             "draft_id", "project", "updated_by"}


def read_label_studio_annotations(path: Path, tasks: list) -> AnnotationSet:
    """One entry per task of a parsed export, JSON (tasks with `data` and `annotations`) or JSON-MIN
    (flat records: the task's data fields, `id`, and per control a list of region values).

    Boxes come out normalized (0..1 of the image). A task without a completed annotation becomes a
    `pending` entry (it stays in its batch); a malformed task an entry problem.

    Raises:
        LabelStudioFormatError: the export holds no task at all.
    """
    if not tasks:
        raise LabelStudioFormatError(f"{path}: an empty list, no task to import")
    entries, minimal = [], {}
    for number, task in enumerate(tasks):
        if isinstance(task, dict) and not ({"data", "annotations", "completions", "predictions"} & set(task)):
            key = task.get("id") if isinstance(task.get("id"), (int, str)) else f"#{number}"
            minimal.setdefault(key, []).append((number, task))
            continue
        entries.append(_task_entry(path, number, task))
    for key, records in minimal.items():
        entries.append(_min_entry(path, key, records))
    return AnnotationSet(entries)


def _task_entry(path: Path, number: int, task) -> AnnotationEntry:
    annotations = task.get("annotations", task.get("completions", [])) if isinstance(task, dict) else None
    if not isinstance(annotations, list):
        return AnnotationEntry(f"{path.name} task #{number}", "", [], [],
                               problem="not a Label Studio task (an object with 'data' and 'annotations')")
    where = f"{path.name} task {task.get('id', f'#{number}')}"
    entry = _entry_for_image(where, task.get("data") if isinstance(task.get("data"), dict) else {})
    if entry.problem:
        return entry
    if any(not isinstance(a, dict) for a in annotations):
        entry.problem = "an annotation is not an object"
        return entry
    completed = [(n, a) for n, a in enumerate(annotations) if not (a.get("was_cancelled") or a.get("skipped"))]
    if not completed:
        entry.pending = ("only cancelled (skipped) annotations" if annotations else
                         "only predictions, no annotation" if task.get("predictions") else "no annotation yet")
        return entry
    annotation = _latest(completed, "id")
    if len(completed) > 1:
        entry.notes.append(f"{where}: {len(completed)} completed annotations; used annotation "
                           f"{annotation.get('id', '(no id)')} (the most recently updated), the others ignored")
    result = annotation.get("result", [])
    if not isinstance(result, list):
        entry.problem = "'result' is not a list"
        return entry
    _read_regions(entry, result)
    return entry


def _min_entry(path: Path, key, records: list[tuple[int, dict]]) -> AnnotationEntry:
    """A JSON-MIN task: one record per completed annotation (Label Studio leaves out cancelled ones)."""
    where = f"{path.name} task {key}" if not str(key).startswith("#") else f"{path.name} record {key}"
    record = _latest(records, "annotation_id")
    data = {k: v for k, v in record.items() if k in ("mgral_id", "image") or
            (k not in _MIN_META and isinstance(v, str))}
    entry = _entry_for_image(where, data)
    if entry.problem:
        return entry
    if len(records) > 1:
        entry.notes.append(f"{where}: {len(records)} annotations; used annotation "
                           f"{record.get('annotation_id', '(no id)')} (the most recently updated), the others ignored")
    result = []
    for control, values in record.items():
        if control in _MIN_META or not isinstance(values, list) or not values:
            continue
        if not all(isinstance(v, dict) for v in values):
            continue  # a multiple-choice or text control: not regions
        for value in values:
            kind = _min_type(value)
            geometry = tuple(json.dumps(value.get(k)) for k in ("x", "y", "width", "height", "points", "rotation"))
            result.append({"type": kind, "value": value, "id": geometry, "from_name": control,
                           "original_width": value.get("original_width"),
                           "original_height": value.get("original_height")})
    _read_regions(entry, result)
    return entry


def _min_type(value: dict) -> str:
    """The result type of a JSON-MIN region value (JSON-MIN drops `type`): its label key, else its geometry."""
    for key in ("rectanglelabels", "polygonlabels", "ellipselabels", "keypointlabels", "brushlabels", "labels"):
        if key in value:
            return key
    if "points" in value:
        return "polygon"
    if "radiusX" in value:
        return "ellipse"
    if "rle" in value or "format" in value:
        return "brush"
    if "height" not in value and "x" in value:
        return "keypoint"
    return "rectangle"


def _entry_for_image(where: str, data: dict) -> AnnotationEntry:
    """An entry naming its image by the task data's `mgral_id`, else its `image` (or only image-like) field."""
    mgral_id = data.get("mgral_id")
    mgral_id = str(mgral_id) if isinstance(mgral_id, (str, int)) and not isinstance(mgral_id, bool) and \
        str(mgral_id) else None
    image = data.get("image")
    if not isinstance(image, str):
        candidates = [v for v in data.values() if isinstance(v, str) and
                      PurePosixPath(v.split("?")[0]).suffix.lower() in IMAGE_SUFFIXES]
        image = candidates[0] if len(candidates) == 1 else None
    entry = AnnotationEntry(where, image or mgral_id or "", [], [], normalized=True, mgral_id=mgral_id)
    if mgral_id:
        entry.reference = "mgral_id"
        return entry
    if not image:
        entry.problem = "the task data has no 'image' field (nor the project's 'mgral_id')"
        return entry
    try:
        reference = parse_image_reference(image)
    except FormatError as err:
        entry.problem = str(err)
        return entry
    entry.name = reference.path if reference.path is not None else image
    entry.file_name, entry.reference = reference.file_name, reference.how
    return entry


def _timestamp(value) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def _latest(numbered: list[tuple[int, dict]], id_key: str) -> dict:
    """The annotation the rule picks: latest `updated_at` (else `created_at`), then highest id, then last given."""
    def order(pair):
        number, annotation = pair
        stamp = _timestamp(annotation.get("updated_at"))
        stamp = stamp if stamp is not None else _timestamp(annotation.get("created_at"))
        ident = annotation.get(id_key)
        return (-math.inf if stamp is None else stamp,
                float(ident) if is_number(ident) or (isinstance(ident, str) and ident.isdigit()) else -math.inf,
                number)
    return max(numbered, key=order)[1]


def _read_regions(entry: AnnotationEntry, result: list) -> None:
    """Fill `entry.boxes` / `entry.classes` from one annotation's results (see the rule above)."""
    regions: dict = {}  # region id -> its shapes [(shape, value, original size)] and labels (JSON-MIN: by geometry)
    ignored: dict[str, int] = {}
    sizes = set()
    for n, item in enumerate(result):
        if not isinstance(item, dict):
            entry.boxes.append(None)
            entry.classes.append(f"<result #{n} is not an object>")
            continue
        kind = item.get("type")
        rid = item.get("id") if isinstance(item.get("id"), (str, int, tuple)) else f"#{n}"
        shown = f"#{n}" if isinstance(rid, tuple) else rid
        if kind in _NOT_REGIONS:
            ignored[kind] = ignored.get(kind, 0) + 1
            continue
        if kind in _NO_BOX_TYPES:
            entry.boxes.append(None)
            entry.classes.append(f"<result {shown} is a {kind!r} region, which has no box: MGRAL trains a box "
                                 "detector; draw rectangles or polygons, or remove it>")
            continue
        value = item.get("value")
        if kind not in _REGION_TYPES or not isinstance(value, dict):
            entry.boxes.append(None)
            entry.classes.append(f"<result {shown}: unknown result type {kind!r}>" if kind not in _REGION_TYPES
                                 else f"<result {shown}: 'value' is not an object>")
            continue
        rotation = item.get("image_rotation")
        if is_number(rotation) and abs(rotation) % 360 > 1e-6:
            entry.boxes.append(None)
            entry.classes.append(f"<result {shown}: drawn on an image rotated by {rotation} degrees in Label Studio "
                                 "(image_rotation); reset the image's rotation there and save the annotation again>")
            continue
        width, height = item.get("original_width"), item.get("original_height")
        size = (float(width), float(height)) if is_number(width) and is_number(height) and width > 0 and height > 0 \
            else None
        if size:
            sizes.add(size)
        region = regions.setdefault(rid, {"shapes": [], "labels": [], "bad_labels": False, "shown": shown})
        shape = _REGION_TYPES[kind] or _shape_of_labels(value)
        region["shapes"].append((shape, value, size))
        for key in ("rectanglelabels", "polygonlabels", "ellipselabels", "labels"):
            if key in value:
                labels = value[key]
                if isinstance(labels, list) and all(isinstance(v, str) for v in labels):
                    region["labels"] += [v for v in labels if v not in region["labels"]]
                else:
                    region["bad_labels"] = True
    if len(sizes) > 1:
        entry.problem = f"its results give different original image sizes {sorted(sizes)}"
        return
    entry.annotated_size = next(iter(sizes), None)
    if ignored:
        entry.notes.append(f"{entry.where}: ignored {', '.join(f'{n} {k!r}' for k, n in sorted(ignored.items()))} "
                           "result(s): not regions, no box to learn")
    for region in regions.values():
        shapes = [(s, v, size) for s, v, size in region["shapes"] if s]
        if not shapes:
            entry.boxes.append(None)
            entry.classes.append(f"<result {region['shown']}: a label without a region (no rectangle or polygon "
                                 "with this id)>")
            continue
        box = _normalized_box(*shapes[0])
        labels = region["labels"]
        if isinstance(box, str):
            entry.boxes.append(None)
            entry.classes.append(box)
        elif region["bad_labels"]:
            entry.boxes.append(None)
            entry.classes.append("<the labels of a box must be a list of class names>")
        elif not labels:
            entry.boxes.append(None)
            entry.classes.append(f"<{shapes[0][0]} without a label>")
        elif len(labels) > 1:
            entry.boxes.append(None)
            entry.classes.append(f"<{shapes[0][0]} with {len(labels)} different labels {labels}: a box needs exactly "
                                 "one class (ambiguous; keep one label)>")
        else:
            entry.boxes.append(box)
            entry.classes.append(labels[0])


def _shape_of_labels(value: dict) -> str | None:
    """A `labels` result carries its region's geometry too: use it when no shape result has this id."""
    if "points" in value:
        return "polygon"
    if "radiusX" in value:
        return "ellipse"
    if all(k in value for k in ("x", "y", "width", "height")):
        return "rectangle"
    return None


def _normalized_box(shape: str, value: dict, size: tuple[float, float] | None) -> list[float] | str:
    """[x1, y1, x2, y2] in 0..1 of the image from a region's percent geometry, or "<message>"."""
    if shape == "polygon":
        points = value.get("points")
        if not (isinstance(points, list) and len(points) >= 3 and all(
                isinstance(p, list) and len(p) == 2 and all(is_number(c) and math.isfinite(c) for c in p)
                for p in points)):
            return "<polygon needs at least 3 points [x, y] (percent of the image)>"
        xs, ys = [p[0] / 100 for p in points], [p[1] / 100 for p in points]
        return [min(xs), min(ys), max(xs), max(ys)]
    rotation = value.get("rotation", 0)
    rotation = 0 if rotation is None else rotation
    if not is_number(rotation) or not math.isfinite(rotation):
        return f"<{shape} rotation must be a number of degrees, got {rotation!r}>"
    turned = abs(rotation) % 360 > 1e-6
    if turned and size is None:
        return (f"<rotated {shape} (rotation {rotation}) needs original_width and original_height to be turned into "
                "a box>")
    if shape == "ellipse":
        keys = ("x", "y", "radiusX", "radiusY")
        if not all(is_number(value.get(k)) for k in keys):
            return "<ellipse needs numeric x, y, radiusX, radiusY (percent of the image)>"
        cx, cy, rx, ry = (value[k] / 100 for k in keys)
        if turned:  # half extents of the rotated ellipse, in pixels (the axes are scaled differently)
            (w, h), a = size, math.radians(rotation)
            ex = math.hypot(rx * w * math.cos(a), ry * h * math.sin(a)) / w
            ey = math.hypot(rx * w * math.sin(a), ry * h * math.cos(a)) / h
            rx, ry = ex, ey
        return [cx - rx, cy - ry, cx + rx, cy + ry]
    if not all(is_number(value.get(k)) for k in ("x", "y", "width", "height")):
        return "<rectangle needs numeric x, y, width, height (percent of the image)>"
    x, y, bw, bh = (value[k] / 100 for k in ("x", "y", "width", "height"))
    if not turned:
        return [x, y, x + bw, y + bh]
    # Label Studio turns a rectangle about its top-left corner (x, y), clockwise on screen (y points down)
    (w, h), a = size, math.radians(rotation)
    px, py, pw, ph = x * w, y * h, bw * w, bh * h
    cos, sin = math.cos(a), math.sin(a)
    xs = [px, px + pw * cos, px + pw * cos - ph * sin, px - ph * sin]
    ys = [py, py + pw * sin, py + pw * sin + ph * cos, py + ph * cos]
    return [min(xs) / w, min(ys) / h, max(xs) / w, max(ys) / h]
