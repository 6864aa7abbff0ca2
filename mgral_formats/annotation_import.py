"""Import finished annotations (Label Studio JSON export, COCO JSON, YOLO label folder) into a project.

Everything is validated before anything changes. If any problem is found nothing is merged and
every problem is reported by file/task. Otherwise label files are written and then the pool
table is replaced atomically (the commit point): all of the import or none of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from mgral_workspace.atomic import write_text_atomic
from mgral_formats.labels import format_yolo_label, read_yolo_label
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info


class AnnotationImportError(ValueError):
    """The import was refused; `problems` lists each one and nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__("import refused, nothing changed:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # already imported with the same labels
    cycle: int = 0


@dataclass
class _Entry:
    where: str  # file / task for messages
    name: str  # image reference as given (path, URL or id)
    boxes: list  # [x1, y1, x2, y2] pixels, or normalized for YOLO (converted later); None if malformed
    classes: list  # class indices or names; "<message>" for a malformed box
    normalized: bool = False
    problem: str | None = None  # the whole entry is unusable (malformed task or image entry)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _key(value):
    """A JSON id usable as a dict key (ints and strings), else None."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _name_problem(name: str) -> str | None:
    if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
        return f"file name {name!r} tries to leave the project (absolute path or '..')"
    return None


def _image_ref(task: dict) -> str:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    if data.get("mgral_id"):
        return str(data["mgral_id"])
    url = str(data.get("image", ""))
    query = parse_qs(urlparse(url).query)
    path = unquote(query["d"][0]) if "d" in query else unquote(urlparse(url).path)
    return path


def _read_label_studio(path: Path, tasks: list) -> list[_Entry]:
    entries = []
    for number, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("annotations", []), list):
            entries.append(_Entry(f"{path.name} task #{number}", "", [], [],
                                  problem="not a Label Studio task (an object with 'data' and 'annotations')"))
            continue
        annotations = [a for a in task.get("annotations", []) if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            continue  # not labeled yet: stays pending
        where = f"{path.name} task {task.get('id', number)}"
        result = annotations[-1].get("result", [])
        if not isinstance(result, list):
            entries.append(_Entry(where, _image_ref(task), [], [], problem="'result' is not a list"))
            continue
        boxes, classes = [], []
        for item in result:
            if not isinstance(item, dict) or item.get("type") != "rectanglelabels":
                continue
            v = item.get("value") if isinstance(item.get("value"), dict) else {}
            w, h = item.get("original_width"), item.get("original_height")
            labels = v.get("rectanglelabels")
            if not all(_is_number(v.get(k)) for k in ("x", "y", "width", "height")):
                boxes.append(None)
                classes.append("<rectangle needs numeric x, y, width, height (percent of the image)>")
            elif _is_number(v.get("rotation")) and abs(v["rotation"]) > 1e-6:
                boxes.append(None)
                classes.append(f"<rotated rectangle (rotation {v['rotation']}) is not supported; "
                               "draw axis-aligned boxes>")
            elif not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
                boxes.append(None)
                classes.append("<rectangle without a label>")
            else:
                boxes.append((v["x"], v["y"], v["width"], v["height"], w, h))
                classes.append(labels[0])
        entries.append(_Entry(where, _image_ref(task), boxes, classes))
    return entries


def _read_coco(path: Path, doc: dict) -> list[_Entry]:
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key, []), list):
            raise AnnotationImportError([f"{path}: '{key}' must be a list"])
    names = {_key(c.get("id")): c.get("name") for c in doc.get("categories", []) if isinstance(c, dict)}
    images = [img for img in doc["images"] if isinstance(img, dict)]
    entries = [_Entry(f"{path.name} image entry #{n}", "", [], [], problem="not an object")
               for n, img in enumerate(doc["images"]) if not isinstance(img, dict)]
    id_count: dict = {}
    for img in images:
        id_count[_key(img.get("id"))] = id_count.get(_key(img.get("id")), 0) + 1
    per_image: dict = {image_id: [] for image_id in id_count}
    annotation_ids: set = set()
    for n, ann in enumerate(doc.get("annotations", [])):
        if not isinstance(ann, dict) or _key(ann.get("image_id")) not in per_image or ann.get("image_id") is None:
            label = ann.get("id") if isinstance(ann, dict) else f"#{n}"
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            entries.append(_Entry(f"{path.name} annotation {label}", "", [], [],
                                  problem=f"refers to image id {image_id!r}, not in 'images'"))
            continue
        if _key(ann.get("id")) is not None and _key(ann.get("id")) in annotation_ids:
            entries.append(_Entry(f"{path.name} annotation {ann['id']}", "", [], [],
                                  problem="annotation id appears more than once"))
            continue
        annotation_ids.add(_key(ann.get("id")))
        per_image[_key(ann["image_id"])].append(ann)
    for img in images:
        where = f"{path.name} image {img.get('id')}"
        name = img.get("mgral_id") or img.get("file_name")
        if _key(img.get("id")) is None or not isinstance(name, str) or not name:
            entries.append(_Entry(where, "", [], [], problem="an image entry needs an 'id' and a 'file_name'"))
            continue
        if id_count[img["id"]] > 1:
            entries.append(_Entry(where, name, [], [], problem=f"image id {img['id']!r} is used by "
                                                                f"{id_count[img['id']]} image entries"))
            continue
        boxes, classes = [], []
        for ann in per_image[img["id"]]:
            bbox = ann.get("bbox", [None] * 4)
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(v is None or _is_number(v) for v in bbox)):
                boxes.append(None)
                classes.append(f"<annotation {ann.get('id')}: bbox must be 4 numbers [x, y, width, height]>")
                continue
            x, y, w, h = (float(v) if v is not None else math.nan for v in bbox)
            boxes.append([x, y, x + w, y + h])
            category = _key(ann.get("category_id"))
            classes.append(names[category] if category in names and isinstance(names[category], str)
                           else f"<annotation {ann.get('id')}: category id {ann.get('category_id')!r} "
                                "not in the file's 'categories'>")
        entries.append(_Entry(where, name, boxes, classes))
    return entries


def _read_yolo_dir(path: Path) -> list[_Entry]:
    entries = []
    for label in sorted(path.glob("*.txt")):
        boxes, classes = [], []
        try:
            text = label.read_text()
        except UnicodeDecodeError as err:
            entries.append(_Entry(label.name, label.stem, [], [], normalized=True, problem=f"not a text file ({err})"))
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                if len(parts) != 5:
                    raise ValueError
            except ValueError:
                boxes.append(None)
                classes.append(f"<{label.name} line {number}: malformed>")
                continue
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            classes.append(cls)
        entries.append(_Entry(label.name, label.stem, boxes, classes, normalized=True))
    return entries


def read_annotations(source: str | Path) -> list[_Entry]:
    source = Path(source)
    if source.is_dir():
        return _read_yolo_dir(source)
    try:
        doc = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationImportError([f"{source}: cannot read as JSON ({err})"]) from None
    if isinstance(doc, list):
        return _read_label_studio(source, doc)
    if isinstance(doc, dict) and "images" in doc:
        return _read_coco(source, doc)
    raise AnnotationImportError([f"{source}: neither a Label Studio export (a list of tasks) nor COCO JSON"])


def import_annotations(project_dir: str | Path, source: str | Path) -> ImportSummary:
    """Validate `source` against the project's open batches and merge it; raises AnnotationImportError."""
    project = Path(project_dir)
    info = load_project_info(project)
    pool = PoolState.load(project)
    table = pool.table.set_index("image_id")
    by_file = {Path(f).name: i for i, f in zip(table.index, table["file"])}
    pending, labeled = set(pool.pending_ids()), set(pool.labeled_pool_ids)
    problems, accepted, unchanged, seen = [], {}, [], {}
    for entry in read_annotations(source):
        if entry.problem:
            problems.append(f"{entry.where}: {entry.problem}")
            continue
        bad_name = _name_problem(entry.name)
        if bad_name:
            problems.append(f"{entry.where}: {bad_name}")
            continue
        image_id = entry.name if entry.name in table.index else by_file.get(PurePosixPath(entry.name).name)
        if image_id is None:
            problems.append(f"{entry.where}: image {entry.name!r} is not in the project")
            continue
        if image_id in seen:
            problems.append(f"{entry.where}: duplicate annotation for {image_id} (also in {seen[image_id]})")
            continue
        seen[image_id] = entry.where
        width, height = int(table.loc[image_id, "width"]), int(table.loc[image_id, "height"])
        converted = _convert(entry, info.class_names, width, height, problems)
        if converted is None:
            continue
        if image_id in labeled:
            current = read_yolo_label(project / table.loc[image_id, "label_file"], width, height)
            if _same(current, converted):
                unchanged.append(image_id)
            else:
                problems.append(f"{entry.where}: {image_id} is already labeled (with different labels)")
            continue
        if image_id not in pending:
            problems.append(f"{entry.where}: {image_id} is not in an open batch (not selected for labeling)")
            continue
        accepted[image_id] = converted
    if problems:
        raise AnnotationImportError(problems)
    cycle = int(table.loc[list(accepted), "selected_cycle"].max()) if accepted else pool.current_cycle
    label_files = {}
    for image_id, (boxes, classes) in accepted.items():
        width, height = int(table.loc[image_id, "width"]), int(table.loc[image_id, "height"])
        write_text_atomic(info.labels_dir / f"{image_id}.txt", format_yolo_label(boxes, classes, width, height))
        label_files[image_id] = f"labels/{image_id}.txt"
    if label_files:
        updated = pool
        cycles = table.loc[list(label_files), "selected_cycle"]
        for batch_cycle in sorted(set(cycles)):
            ids = cycles.index[cycles == batch_cycle]
            updated = updated.mark_labeled({i: label_files[i] for i in ids}, int(batch_cycle))
        updated.save(project)
    return ImportSummary(sorted(label_files), sorted(unchanged), cycle)


def _convert(entry: _Entry, class_names, width: int, height: int, problems: list[str]):
    boxes, classes = [], []
    for i, (box, cls) in enumerate(zip(entry.boxes, entry.classes)):
        where = f"{entry.where} box {i}"
        if isinstance(cls, str) and cls.startswith("<"):
            problems.append(f"{where}: {cls.strip('<>')}")
            return None
        if isinstance(cls, str):
            if cls not in class_names:
                problems.append(f"{where}: unknown class name {cls!r}; project classes: {list(class_names)}")
                return None
            cls = class_names.index(cls)
        elif not 0 <= int(cls) < len(class_names):
            problems.append(f"{where}: class id {cls} not in 0..{len(class_names) - 1}")
            return None
        if len(box) == 6:  # Label Studio percent box with its own original size
            x, y, w, h, ow, oh = box
            box = [x / 100 * width, y / 100 * height, (x + w) / 100 * width, (y + h) / 100 * height]
        elif entry.normalized:
            box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        box = np.asarray(box, dtype=np.float64)
        if not np.all(np.isfinite(box)):
            problems.append(f"{where}: NaN or infinite coordinate")
            return None
        if box[0] < -1 or box[1] < -1 or box[2] > width + 1 or box[3] > height + 1:
            problems.append(f"{where}: box {np.round(box, 1).tolist()} outside the {width}x{height} image")
            return None
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            problems.append(f"{where}: box {np.round(box, 1).tolist()} has zero area")
            return None
        boxes.append(np.clip(box, 0, [width, height, width, height]))
        classes.append(int(cls))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def _same(a, b) -> bool:
    return a[0].shape == b[0].shape and np.allclose(a[0], b[0], atol=0.5) and np.array_equal(a[1], b[1])


def import_inbox(project_dir: str | Path) -> tuple[ImportSummary, list[str]]:
    """Import every file or YOLO folder waiting in project/inbox; successfully imported ones move to inbox/done."""
    inbox = Path(project_dir) / "inbox"
    total, errors = ImportSummary(), []
    if not inbox.exists():
        return total, errors
    for item in sorted(p for p in inbox.iterdir() if p.name != "done" and not p.name.startswith(".")):
        try:
            summary = import_annotations(project_dir, item)
        except AnnotationImportError as err:
            errors.append(f"{item.name}: {err}")
            continue
        total.imported += summary.imported
        total.unchanged += summary.unchanged
        (inbox / "done").mkdir(exist_ok=True)
        item.rename(inbox / "done" / item.name)
    return total, errors
