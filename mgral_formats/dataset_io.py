"""Bring-your-own-data importers (YOLO txt, COCO JSON, Pascal VOC XML) with per-file validation.

An image with any problem (unreadable, too large, bad box, unknown class, duplicate name or id) is
quarantined: left out of the dataset and listed in the report with a specific reason. A malformed
entry or a file name leaving the dataset folder is reported and skipped. Only an unusable top-level
file (data.yaml, a lone COCO JSON) stops the import, with a ValueError naming it.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

# Ultralytics replaces PIL.Image.open with a wrapper that tries to install a HEIF plugin on
# unidentified files; validation must use Pillow's own opener whatever was imported first.
_pil_open = Image.open
if not _pil_open.__module__.startswith("PIL"):
    _pil_open = getattr(sys.modules.get(_pil_open.__module__), "_image_open", _pil_open)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
BOX_TOLERANCE = 1.0  # pixels a box may stick out of the image before it is an error (then clipped)
# Pillow's default decompression-bomb threshold (about 9459 x 9459). Checked from the header, before
# decoding, and independently of Image.MAX_IMAGE_PIXELS (which Ultralytics may set to None).
MAX_IMAGE_PIXELS = 89_478_485


class ImageTooLarge(ValueError):
    """An image above MAX_IMAGE_PIXELS; refused before it is decoded."""


@dataclass(frozen=True)
class Problem:
    file: str
    kind: str
    message: str


@dataclass
class ImageRecord:
    """One importable image: boxes_xyxy (N, 4) pixels, classes (N,), labeled False = no annotation."""

    source_path: Path
    name: str
    split: str | None
    width: int
    height: int
    boxes_xyxy: np.ndarray
    classes: np.ndarray
    labeled: bool


@dataclass
class ImportedDataset:
    class_names: list[str]
    images: list[ImageRecord]


@dataclass
class ImportReport:
    problems: list[Problem] = field(default_factory=list)
    quarantined: dict[str, list[str]] = field(default_factory=dict)  # source path -> reasons
    imported: int = 0

    def add(self, file: str | Path, kind: str, message: str, quarantine: bool = True) -> None:
        self.problems.append(Problem(str(file), kind, message))
        if quarantine:
            self.quarantined.setdefault(str(file), []).append(f"{kind}: {message}")

    def to_text(self) -> str:
        lines = [f"imported {self.imported} images; {len(self.quarantined)} quarantined; "
                 f"{len(self.problems)} problems"]
        lines += [f"  {p.file}: [{p.kind}] {p.message}" for p in self.problems]
        return "\n".join(lines)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after fully decoding the file; raises ValueError with the reason.

    An image above MAX_IMAGE_PIXELS raises ImageTooLarge from its header alone, never decoded.
    """
    if not path.exists():
        raise ValueError("file not found")
    if path.stat().st_size == 0:
        raise ValueError("zero-byte file")
    advice = f"MGRAL accepts up to {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels; tile or downscale it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # reported below, by file
            with _pil_open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageTooLarge(f"image too large: {width}x{height} = {width * height / 1e6:.1f} "
                                        f"megapixels (possible decompression bomb); {advice}")
                image.load()
                return image.size
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"image too large, refused by Pillow as a possible decompression bomb ({err}); "
                            f"{advice}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify the file format)") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"unreadable or truncated image ({err})") from None


def _read_size(path: Path, report: ImportReport) -> tuple[int, int] | None:
    """image_size, or None after reporting why the image cannot be used."""
    try:
        return image_size(path)
    except ImageTooLarge as err:
        report.add(path, "image too large", str(err))
    except ValueError as err:
        report.add(path, "unreadable image", str(err))
    return None


def _leaves_folder(name: str) -> bool:
    """True for an absolute name or one with a '..' part: it could point outside the dataset."""
    return name.startswith("/") or ".." in PurePosixPath(name).parts


def _check_boxes(file: str, boxes: np.ndarray, classes: np.ndarray, width: int, height: int,
                 num_classes: int, report: ImportReport, where: Sequence[str]) -> np.ndarray | None:
    """Validated boxes (clipped within tolerance), or None after reporting the first problem."""
    boxes = boxes.astype(np.float64).reshape(-1, 4)
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        if not (0 <= cls < num_classes):
            report.add(file, "unknown class", f"{where[i]}: class id {cls} not in 0..{num_classes - 1}")
            return None
        if not np.all(np.isfinite(box)):
            report.add(file, "invalid box", f"{where[i]}: NaN or infinite coordinate {box.tolist()}")
            return None
        x1, y1, x2, y2 = box
        if x1 < -BOX_TOLERANCE or y1 < -BOX_TOLERANCE or x2 > width + BOX_TOLERANCE or y2 > height + BOX_TOLERANCE:
            report.add(file, "box outside image",
                       f"{where[i]}: box {np.round(box, 2).tolist()} outside the {width}x{height} image")
            return None
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            report.add(file, "zero-area box", f"{where[i]}: box {np.round(box, 2).tolist()} has no area "
                                              "(zero or negative width or height)")
            return None
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.float32)


def _add_image(dataset: ImportedDataset, report: ImportReport, seen: dict[str, Path], path: Path,
               split: str | None, boxes: np.ndarray | None, classes: np.ndarray | None, where: Sequence[str],
               labeled: bool, size: tuple[int, int] | None = None) -> None:
    stem = path.stem
    if stem in seen:
        report.add(path, "duplicate name", f"image name {stem!r} also used by {seen[stem]}")
        return
    seen[stem] = path
    size = size or _read_size(path, report)
    if size is None:
        return
    width, height = size
    boxes = np.zeros((0, 4), np.float32) if boxes is None else boxes
    classes = np.zeros(0, np.int64) if classes is None else np.asarray(classes, np.int64)
    checked = _check_boxes(str(path), boxes, classes, width, height, len(dataset.class_names), report, where)
    if checked is None:
        return
    dataset.images.append(ImageRecord(path, stem, split, width, height, checked, classes, labeled))
    report.imported += 1


def _split_of(name: str) -> str | None:
    lowered = name.lower()
    for split, keys in (("train", ("train",)), ("val", ("val",)), ("test", ("test",))):
        if any(k in lowered for k in keys):
            return split
    return None


def load_yolo(root: Path) -> tuple[ImportedDataset, ImportReport]:
    """A data.yaml with names and train/val/test folders or list files; labels by /images/ -> /labels/."""
    data_yaml = root / "data.yaml" if root.is_dir() else root
    if not data_yaml.exists():
        raise FileNotFoundError(f"{data_yaml}: YOLO layout needs a data.yaml")
    try:
        data = yaml.safe_load(data_yaml.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{data_yaml}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{data_yaml}: expected a mapping with 'names' and 'train'/'val'/'test'")
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise ValueError(f"{data_yaml}: 'names' is missing or empty")
    if not isinstance(names, list):
        raise ValueError(f"{data_yaml}: 'names' must be a list or an {{id: name}} mapping, got {names!r}")
    base = (data_yaml.parent / data.get("path", ".")).resolve()
    dataset, report, seen = ImportedDataset(list(map(str, names)), []), ImportReport(), {}
    for split in ("train", "val", "test"):
        if not data.get(split):
            continue
        for path in _yolo_images(base, data[split], data_yaml, report):
            label = Path(str(path).rsplit("/images/", 1)[0] + "/labels/" + str(path).rsplit("/images/", 1)[-1])
            label = label.with_suffix(".txt")
            boxes = classes = None
            where: list[str] = []
            if path.stem in seen:
                report.add(path, "duplicate name", f"image name {path.stem!r} also used by {seen[path.stem]}")
                continue
            size = _read_size(path, report)
            if size is None:
                seen[path.stem] = path
                continue
            if label.exists():
                try:
                    boxes, classes, where = _read_yolo_lines(label, *size)
                except ValueError as err:  # UnicodeDecodeError included
                    report.add(path, "bad label file", str(err))
                    seen[path.stem] = path
                    continue
            _add_image(dataset, report, seen, path, "pool" if split == "train" else split, boxes, classes, where,
                       labeled=label.exists(), size=size)
    return dataset, report


def _yolo_images(base: Path, entry, data_yaml: Path, report: ImportReport) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    paths: list[Path] = []
    for item in entries:
        target = (base / item).resolve()
        if target.is_dir():
            paths += sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif target.suffix == ".txt" and target.exists():
            paths += [(base / line.strip()).resolve() for line in target.read_text().splitlines() if line.strip()]
        else:
            report.add(data_yaml, "missing split", f"{item}: no such folder or list file", quarantine=False)
    return paths


def _read_yolo_lines(label: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """YOLO rows as (pixel boxes, classes, where-strings)."""
    boxes, classes, where = [], [], []
    try:
        text = label.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{label}: not a text file ({err})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise ValueError(f"{label}:{number}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise ValueError(f"{label}:{number}: non-numeric value in {line.strip()!r}") from None
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        classes.append(cls)
        where.append(f"{label.name} line {number}")
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64), where


def load_coco(source: Path) -> tuple[ImportedDataset, ImportReport]:
    """One COCO JSON or a folder of them; category ids mapped to 0..C-1 in sorted id order.

    In a folder, a JSON file that is not a COCO document is reported and skipped; a lone file
    given as the source must be one (else ValueError). Image ids are per file.
    """
    files = [source] if source.is_file() else sorted(source.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{source}: no COCO JSON file found")
    report = ImportReport()
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
            raise ValueError(f"{file}: {problem}")
        else:
            report.add(file, "bad annotation file", problem, quarantine=False)
    if not documents:
        raise ValueError(f"{source}: no usable COCO JSON file\n{report.to_text()}")
    categories, conflicting = _coco_categories(documents, report)
    ids = sorted(categories)
    dataset, seen = ImportedDataset([categories[i][0] for i in ids], []), {}
    index_of = {cat_id: i for i, cat_id in enumerate(ids)}
    root = source if source.is_dir() else source.parent
    for file, doc in documents:
        _load_coco_document(file, doc, root, index_of, conflicting.get(file, {}), dataset, report, seen)
    return dataset, report


def _coco_shape_problem(doc) -> str | None:
    if not isinstance(doc, dict) or "images" not in doc:
        return "not a COCO document (expected an object with 'images', 'annotations' and 'categories' lists)"
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key, []), list):
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


def _coco_box(ann: dict) -> list[float] | None:
    """[x1, y1, x2, y2] from a COCO [x, y, w, h]; missing values become NaN; None if malformed."""
    bbox = ann.get("bbox", [None] * 4)
    if not isinstance(bbox, list) or len(bbox) != 4:
        return None
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in bbox):
        return None
    x, y, w, h = (math.nan if v is None else float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _load_coco_document(file: Path, doc: dict, root: Path, index_of: dict[int, int], conflicting: dict[int, str],
                        dataset: ImportedDataset, report: ImportReport, seen: dict[str, Path]) -> None:
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
    for n, ann in enumerate(doc.get("annotations", [])):
        image_id = _as_int(ann.get("image_id")) if isinstance(ann, dict) else None
        if image_id not in entries:
            report.add(file, "annotation for missing image",
                       f"annotation {ann.get('id') if isinstance(ann, dict) else f'entry {n}'} refers to image id "
                       f"{ann.get('image_id') if isinstance(ann, dict) else None} not in 'images'", quarantine=False)
            continue
        where = f"annotation {ann.get('id')} (category {ann.get('category_id')})"
        ann_id = ann.get("id") if isinstance(ann.get("id"), (int, str)) else None
        if ann_id is not None and ann_id in annotation_ids:
            bad.setdefault(image_id, ("duplicate id", f"{where}: annotation id {ann_id} appears more than once"))
        annotation_ids.add(ann_id)
        cat_id = _as_int(ann.get("category_id"))
        box = _coco_box(ann)
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
    for image_id, names in entries.items():
        for name in names:
            if _leaves_folder(name):
                report.add(file, "file name leaves the dataset",
                           f"image id {image_id}: file name {name!r} is absolute or contains '..'; "
                           "give it relative to the dataset folder", quarantine=False)
                continue
            path = _find_image(name, file.parent, root)
            if path is None:
                report.add(file, "missing image", f"image {name!r} (id {image_id}) not found", quarantine=False)
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
            _add_image(dataset, report, seen, path, _split_of(file.stem),
                       np.asarray([o[0] for o in found], np.float64).reshape(-1, 4),
                       np.asarray([o[1] for o in found], np.int64), [o[2] for o in found], labeled=True)


def _find_image(file_name: str, json_dir: Path, root: Path) -> Path | None:
    for base in (json_dir, json_dir / "images", root, root / "images", json_dir.parent / "images"):
        candidate = (base / file_name)
        if candidate.exists():
            return candidate.resolve()
    return None


def load_voc(root: Path, names: Sequence[str] | None = None) -> tuple[ImportedDataset, ImportReport]:
    """Annotations/*.xml + JPEGImages/ (+ ImageSets/Main/{train,val,test}.txt for splits)."""
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise FileNotFoundError(f"{root}: VOC layout needs an Annotations/ folder")
    parsed, report = [], ImportReport()
    for xml_file in sorted(annotations.glob("*.xml")):
        try:
            tree = ET.parse(xml_file).getroot()
        except ET.ParseError as err:
            report.add(xml_file, "bad annotation file", f"not valid XML ({err})")
            continue
        objects = []
        for i, obj in enumerate(tree.findall("object")):
            box = obj.find("bndbox")
            coords = [_float(box.findtext(k)) if box is not None else math.nan for k in ("xmin", "ymin", "xmax", "ymax")]
            objects.append(((obj.findtext("name") or "").strip(), coords, f"{xml_file.name} object {i}"))
        file_name = (tree.findtext("filename") or "").strip().replace("\\", "/") or f"{xml_file.stem}.jpg"
        if _leaves_folder(file_name):
            report.add(xml_file, "file name leaves the dataset",
                       f"<filename> {file_name!r} is absolute or contains '..'; give it relative to JPEGImages/",
                       quarantine=False)
            continue
        parsed.append((xml_file, file_name, objects))
    class_names = list(names) if names else sorted({o[0] for _, _, objs in parsed for o in objs if o[0]})
    splits = {}
    for split in ("train", "val", "test"):
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if listing.exists():
            splits.update({line.strip(): "pool" if split == "train" else split
                           for line in listing.read_text().splitlines() if line.strip()})
    dataset, seen = ImportedDataset(class_names, []), {}
    for xml_file, file_name, objects in parsed:
        path = root / "JPEGImages" / file_name
        if not path.exists():
            report.add(xml_file, "annotation for missing image", f"{file_name} not found in JPEGImages/",
                       quarantine=False)
            continue
        unknown = [o for o in objects if o[0] not in class_names]
        if unknown:
            message = (f"{unknown[0][2]}: class {unknown[0][0]!r} not in {class_names}" if unknown[0][0]
                       else f"{unknown[0][2]}: object without a <name>")
            report.add(path, "unknown class", message)
            continue
        boxes = np.asarray([o[1] for o in objects], np.float64).reshape(-1, 4)
        classes = np.asarray([class_names.index(o[0]) for o in objects], np.int64)
        _add_image(dataset, report, seen, path, splits.get(path.stem), boxes, classes, [o[2] for o in objects],
                   labeled=True)
    return dataset, report


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def detect_format(source: Path) -> str:
    if source.is_file() and source.suffix == ".json":
        return "coco"
    if (source / "data.yaml").exists() or source.suffix in (".yaml", ".yml"):
        return "yolo"
    if (source / "Annotations").is_dir():
        return "voc"
    if any(source.glob("*.json")) or any(source.glob("annotations/*.json")):
        return "coco"
    raise ValueError(f"{source}: cannot tell the layout (no data.yaml, Annotations/ or COCO JSON); pass --format")


def load_dataset(source: str | Path, fmt: str = "auto") -> tuple[ImportedDataset, ImportReport]:
    """Load and validate a dataset in YOLO, COCO or VOC layout (or detect which)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: dataset not found")
    fmt = detect_format(source) if fmt == "auto" else fmt
    loaders = {"yolo": load_yolo, "coco": load_coco, "voc": load_voc}
    if fmt not in loaders:
        raise ValueError(f"unknown format {fmt!r}; use one of {sorted(loaders)} or auto")
    return loaders[fmt](source)
