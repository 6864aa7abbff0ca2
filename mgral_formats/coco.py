"""COCO JSON: the dataset reader, the reader of finished annotations for import, and the batch exporter.

Both readers check a document's shape and read boxes with the same helpers. They keep their own id
rules: a dataset accepts integral ids in any JSON spelling ("3", 3.0), an import matches ids as given.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from mgral_formats.common import (
    AnnotationEntry,
    AnnotationSet,
    ExportBatch,
    FormatError,
    ImportedDataset,
    ImportReport,
    add_image,
    add_unlabeled_images,
    dataset_files,
    image_files,
    is_number,
    leaves_folder,
    parse_image_reference,
    link_target_outside,
    report_outside_link,
)

LIST_KEYS = ("images", "annotations", "categories")


class CocoFormatError(FormatError):
    """A COCO JSON file cannot be used as a whole; the message names the file."""


def _non_list_key(doc: dict) -> str | None:
    """The first of images/annotations/categories present but not a list, else None."""
    for key in LIST_KEYS:
        if not isinstance(doc.get(key, []), list):
            return key
    return None


def coco_box(ann: dict) -> list[float] | None:
    """[x1, y1, x2, y2] from a COCO [x, y, w, h]; missing values become NaN; None if malformed.

    An annotation without a `bbox` gets the bounding box of its `segmentation` (polygons, or RLE
    through pycocotools), as COCO defines bbox; without either it is malformed (None).
    """
    if "bbox" not in ann:
        return _segmentation_box(ann.get("segmentation"))
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        return None
    if not all(v is None or is_number(v) for v in bbox):
        return None
    x, y, w, h = (math.nan if v is None else float(v) for v in bbox)
    return [x, y, x + w, y + h]


def load_coco(source: Path) -> tuple[ImportedDataset, ImportReport]:
    """One COCO JSON or a folder of them; category ids mapped to 0..C-1 in sorted id order.

    With a folder, every image in it that no JSON lists is imported unlabeled (the pool to select from).

    In a folder, a JSON file that is not a COCO document is reported and skipped; a lone file
    given as the source must be one (else CocoFormatError). Image ids are per file.
    """
    report = ImportReport()
    files = [source] if source.is_file() else dataset_files(source, {".json"}, report)
    if not files:
        raise FileNotFoundError(f"{source}: no COCO JSON file found")
    documents = []
    for file in files:
        try:
            doc = json.loads(file.read_text())
            problem = _coco_shape_problem(doc)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = f"not valid JSON ({err})"
        if problem is None:
            documents.append((file, doc))
        elif source.is_file():
            raise CocoFormatError(f"{file}: {problem}")
        else:
            report.add(file, "bad annotation file", problem, quarantine=False)
    if not documents:
        raise CocoFormatError(f"{source}: no usable COCO JSON file\n{report.to_text()}")
    categories, conflicting = _coco_categories(documents, report)
    ids = sorted(categories)
    dataset, seen = ImportedDataset([categories[i][0] for i in ids], []), {}
    index_of = {cat_id: i for i, cat_id in enumerate(ids)}
    root = source if source.is_dir() else source.parent
    claimed: set[Path] = set()
    for file, doc in documents:
        _load_coco_document(file, doc, root, index_of, conflicting.get(file, {}), dataset, report, seen, claimed)
    if source.is_dir():  # images no JSON lists are the unlabeled pool (in the train split's folder: pool)
        add_unlabeled_images(dataset, report, seen, image_files(root, report), claimed,
                             lambda path: "pool" if split_of(path.parent / "x.json") == "pool" else None)
    return dataset, report


def _segmentation_box(segmentation) -> list[float] | None:
    """The [x1, y1, x2, y2] around a COCO segmentation (list of polygons or an RLE dict); None if unusable."""
    if isinstance(segmentation, list) and segmentation and all(isinstance(p, list) for p in segmentation):
        points = [v for polygon in segmentation for v in polygon]
        if len(points) < 6 or len(points) % 2 or not all(is_number(v) for v in points):
            return None
        xs, ys = [float(v) for v in points[0::2]], [float(v) for v in points[1::2]]
        return [min(xs), min(ys), max(xs), max(ys)]
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        from pycocotools import mask as mask_utils

        try:
            rle = (mask_utils.frPyObjects(segmentation, *segmentation["size"])
                   if isinstance(segmentation["counts"], list) else segmentation)
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        except (TypeError, ValueError, KeyError):
            return None
        return [x, y, x + w, y + h]
    return None


def is_crowd(ann: dict) -> bool:
    """COCO `iscrowd: 1`: a region of many objects, not one object; kept out of training."""
    return ann.get("iscrowd") in (1, True)


def _coco_shape_problem(doc) -> str | None:
    if not isinstance(doc, dict) or "images" not in doc:
        return "not a COCO document (expected an object with 'images', 'annotations' and 'categories' lists)"
    key = _non_list_key(doc)
    if key is not None:
        return f"'{key}' must be a list, got {type(doc[key]).__name__}"
    return None


def _as_int(value) -> int | None:
    """An id as int (ints, integral floats, digit strings); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


SPLIT_WORDS = {"train": "pool", "training": "pool", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


def split_of(file: Path) -> str | None:
    """The split a COCO file holds, from whole words of its name, else of its folder's name.

    `instances_train.json` -> pool, `instances_val2017.json` -> val, Roboflow's
    `valid/_annotations.coco.json` -> val; `annotations_latest.json` names no split (None: the
    project carves one), since words are matched whole, never as substrings ("latest" is not "test").
    """
    for name in (file.stem, file.parent.name):
        words = [w.rstrip("0123456789") for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
        found = {SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS}
        if len(found) == 1:
            return found.pop()
    return None


def _coco_categories(documents, report: ImportReport) -> tuple[dict[int, tuple[str, Path]], dict[Path, dict]]:
    """{category id: (name, first file)} over all files, and per file the ids whose name conflicts."""
    categories: dict[int, tuple[str, Path]] = {}
    conflicting: dict[Path, dict[int, str]] = {}
    for file, doc in documents:
        for n, cat in enumerate(doc.get("categories", [])):
            cat_id = _as_int(cat.get("id")) if isinstance(cat, dict) else None
            name = str(cat.get("name", "")).strip() if isinstance(cat, dict) else ""
            if cat_id is None or not name:
                report.add(file, "bad category", f"category entry {n} needs an integer 'id' and a 'name': "
                                                 f"{_short(cat)}", quarantine=False)
                continue
            if cat_id in categories and categories[cat_id][0] != name:
                message = (f"category id {cat_id} is {name!r} here but {categories[cat_id][0]!r} in "
                           f"{categories[cat_id][1]}")
                conflicting.setdefault(file, {})[cat_id] = message
                report.add(file, "conflicting category", message + "; its annotations here are quarantined",
                           quarantine=False)
                continue
            categories.setdefault(cat_id, (name, file))
    return categories, conflicting


def _load_coco_document(file: Path, doc: dict, root: Path, index_of: dict[int, int], conflicting: dict[int, str],
                        dataset: ImportedDataset, report: ImportReport, seen: dict[str, Path],
                        claimed: set[Path]) -> None:
    entries: dict[int, list[str]] = {}  # image id -> file names (more than one: duplicate id)
    for n, img in enumerate(doc["images"]):
        image_id = _as_int(img.get("id")) if isinstance(img, dict) else None
        name = img.get("file_name") if isinstance(img, dict) else None
        if image_id is None or not isinstance(name, str) or not name.strip():
            report.add(file, "bad image entry", f"image entry {n} needs an integer 'id' and a 'file_name': "
                                                f"{_short(img)}", quarantine=False)
            continue
        entries.setdefault(image_id, []).append(name.strip().replace("\\", "/"))
    objects: dict[int, list] = {i: [] for i in entries}
    bad: dict[int, tuple[str, str]] = {}  # image id -> its first (kind, message)
    annotation_ids: set = set()
    crowd = 0
    for n, ann in enumerate(doc.get("annotations", [])):
        image_id = _as_int(ann.get("image_id")) if isinstance(ann, dict) else None
        if image_id not in entries:
            report.add(file, "annotation for missing image",
                       f"annotation {ann.get('id') if isinstance(ann, dict) else f'entry {n}'} refers to image id "
                       f"{ann.get('image_id') if isinstance(ann, dict) else None} not in 'images'", quarantine=False)
            continue
        if is_crowd(ann):
            crowd += 1
            continue
        where = f"annotation {ann.get('id')} (category {ann.get('category_id')})"
        ann_id = ann.get("id") if isinstance(ann.get("id"), (int, str)) else None
        if ann_id is not None and ann_id in annotation_ids:
            bad.setdefault(image_id, ("duplicate id", f"{where}: annotation id {ann_id} appears more than once"))
        annotation_ids.add(ann_id)
        cat_id = _as_int(ann.get("category_id"))
        box = coco_box(ann)
        if cat_id in conflicting:
            bad.setdefault(image_id, ("unknown class", f"{where}: {conflicting[cat_id]}"))
        elif cat_id not in index_of:
            bad.setdefault(image_id, ("unknown class", f"{where}: category id {ann.get('category_id')!r} not in "
                                                       f"'categories' (ids {sorted(index_of)})"))
        elif box is None:
            bad.setdefault(image_id, ("invalid box", f"{where}: bbox must be 4 numbers [x, y, width, height], "
                                                     f"got {_short(ann.get('bbox'))}"))
        else:
            objects[image_id].append((box, index_of[cat_id], where))
    if crowd:
        report.add(file, "crowd regions", f"{crowd} annotations with iscrowd: 1 (regions of many objects) left out "
                   "of training; their images are imported with their other boxes", quarantine=False)
    for image_id, names in entries.items():
        for name in names:
            if leaves_folder(name):
                report.add(file, "file name leaves the dataset",
                           f"image id {image_id}: file name {name!r} is absolute or contains '..'; "
                           "give it relative to the dataset folder", quarantine=False)
                continue
            path = _find_image(name, file.parent, root)
            if path is None:
                report.add(file, "missing image", f"image {name!r} (id {image_id}) not found", quarantine=False)
                continue
            claimed.add(path.resolve())
            target = link_target_outside(path, root)
            if target is not None:
                report_outside_link(report, path, target, root)
                continue
            problem = bad.get(image_id)
            if len(names) > 1:
                problem = ("duplicate id", f"image id {image_id} is used by {len(names)} entries ({', '.join(names)}) "
                                           f"in {file.name}; its annotations cannot be assigned")
            if problem is not None:
                report.add(path, *problem)
                seen.setdefault(path.stem, path)
                continue
            found = objects[image_id]
            add_image(dataset, report, seen, path, split_of(file),
                      np.asarray([o[0] for o in found], np.float64).reshape(-1, 4),
                      np.asarray([o[1] for o in found], np.int64), [o[2] for o in found], labeled=True)


def _find_image(file_name: str, json_dir: Path, root: Path) -> Path | None:
    for base in (json_dir, json_dir / "images", root, root / "images", json_dir.parent / "images"):
        candidate = (base / file_name)
        if candidate.exists():
            return Path(os.path.abspath(candidate))
    return None


def _key(value):
    """A JSON id usable as a dict key (ints and strings), else None."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def read_coco_annotations(path: Path, doc: dict) -> AnnotationSet:
    """One entry per image of a parsed COCO document (boxes in pixels, classes by category name).

    An image entry is named by its `mgral_id` when it has one, else by `file_name` (a path, or a URL
    as some tools write it). A malformed image entry, annotation or box becomes an entry problem or a
    malformed box; a non-list images/annotations/categories or an empty `images` raises CocoFormatError.
    """
    key = _non_list_key(doc)
    if key is not None:
        raise CocoFormatError(f"{path}: '{key}' must be a list")
    if not doc["images"]:
        raise CocoFormatError(f"{path}: 'images' is empty, no image to import")
    names = {_key(c.get("id")): c.get("name") for c in doc.get("categories", []) if isinstance(c, dict)}
    images = [img for img in doc["images"] if isinstance(img, dict)]
    entries = [AnnotationEntry(f"{path.name} image entry #{n}", "", [], [], problem="not an object")
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
            entries.append(AnnotationEntry(f"{path.name} annotation {label}", "", [], [],
                                           problem=f"refers to image id {image_id!r}, not in 'images'"))
            continue
        if _key(ann.get("id")) is not None and _key(ann.get("id")) in annotation_ids:
            entries.append(AnnotationEntry(f"{path.name} annotation {ann['id']}", "", [], [],
                                           problem="annotation id appears more than once"))
            continue
        annotation_ids.add(_key(ann.get("id")))
        per_image[_key(ann["image_id"])].append(ann)
    for img in images:
        where = f"{path.name} image {img.get('id')}"
        mgral_id = img.get("mgral_id") if isinstance(img.get("mgral_id"), str) and img.get("mgral_id") else None
        name = mgral_id or img.get("file_name")
        if _key(img.get("id")) is None or not isinstance(name, str) or not name:
            entries.append(AnnotationEntry(where, "", [], [], problem="an image entry needs an 'id' and a 'file_name'"))
            continue
        entry = AnnotationEntry(where, name, [], [], mgral_id=mgral_id, reference="mgral_id" if mgral_id else "path")
        entries.append(entry)
        if id_count[img["id"]] > 1:
            entry.problem = f"image id {img['id']!r} is used by {id_count[img['id']]} image entries"
            continue
        if not mgral_id:
            try:
                reference = parse_image_reference(name)
            except FormatError as err:
                entry.problem = str(err)
                continue
            entry.name = reference.path if reference.path is not None else name
            entry.file_name, entry.reference = reference.file_name, reference.how
        if is_number(img.get("width")) and is_number(img.get("height")):
            entry.annotated_size = (float(img["width"]), float(img["height"]))
        boxes, classes = [], []
        for ann in per_image[img["id"]]:
            if is_crowd(ann):  # a crowd region is not an object: never a training box
                continue
            box = coco_box(ann)
            if box is None:
                boxes.append(None)
                classes.append(f"<annotation {ann.get('id')}: bbox must be 4 numbers [x, y, width, height]>")
                continue
            boxes.append(box)
            category = _key(ann.get("category_id"))
            classes.append(names[category] if category in names and isinstance(names[category], str)
                           else f"<annotation {ann.get('id')}: category id {ann.get('category_id')!r} "
                                "not in the file's 'categories'>")
        entry.boxes, entry.classes = boxes, classes
    return AnnotationSet(entries)


def export_coco(batch: ExportBatch, out_dir: Path) -> None:
    """coco_images.json (images and categories, no annotations) and coco_predictions.json (pre-labels)."""
    images, predictions = [], []
    for number, image in enumerate(batch.images, start=1):
        det = image.prelabels
        images.append({"id": number, "file_name": image.file, "width": image.width, "height": image.height,
                       "mgral_id": image.image_id, "mgral_split": image.split})
        for (x1, y1, x2, y2), cls, score in zip(det.boxes_xyxy.tolist(), det.classes.tolist(), det.scores.tolist()):
            predictions.append({"image_id": number, "category_id": int(cls) + 1, "score": round(score, 4),
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(batch.class_names)]
    (out_dir / "coco_images.json").write_text(json.dumps({"images": images, "annotations": [],
                                                          "categories": categories}, indent=1))
    (out_dir / "coco_predictions.json").write_text(json.dumps(predictions))
