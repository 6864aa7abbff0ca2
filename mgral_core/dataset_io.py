"""Bring-your-own-data importers (YOLO txt, COCO JSON, Pascal VOC XML) with per-file validation.

An image with any problem (unreadable, bad box, unknown class, duplicate name) is quarantined:
left out of the dataset and listed in the report with a specific reason. Nothing crashes the import.
"""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    """(width, height) after fully decoding the file; raises ValueError with the reason."""
    if not path.exists():
        raise ValueError("file not found")
    if path.stat().st_size == 0:
        raise ValueError("zero-byte file")
    try:
        with _pil_open(path) as image:
            image.load()
            return image.size
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify the file format)") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"unreadable or truncated image ({err})") from None


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
            report.add(file, "zero-area box", f"{where[i]}: box {np.round(box, 2).tolist()} has no area")
            return None
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.float32)


def _add_image(dataset: ImportedDataset, report: ImportReport, seen: dict[str, Path], path: Path,
               split: str | None, boxes: np.ndarray | None, classes: np.ndarray | None, where: Sequence[str],
               labeled: bool) -> None:
    stem = path.stem
    if stem in seen:
        report.add(path, "duplicate name", f"image name {stem!r} also used by {seen[stem]}")
        return
    seen[stem] = path
    try:
        width, height = image_size(path)
    except ValueError as err:
        report.add(path, "unreadable image", str(err))
        return
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
    data = yaml.safe_load(data_yaml.read_text()) or {}
    names = data.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise ValueError(f"{data_yaml}: 'names' is missing or empty")
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
            try:
                width, height = image_size(path)
            except (ValueError, OSError) as err:
                if path.stem not in seen:
                    report.add(path, "unreadable image", str(err))
                    seen[path.stem] = path
                else:
                    report.add(path, "duplicate name", f"image name {path.stem!r} also used by {seen[path.stem]}")
                continue
            if label.exists():
                try:
                    boxes, classes, where = _read_yolo_lines(label, width, height)
                except ValueError as err:
                    report.add(path, "bad label file", str(err))
                    seen[path.stem] = path
                    continue
            _add_image(dataset, report, seen, path, "pool" if split == "train" else split, boxes, classes, where,
                       labeled=label.exists())
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
    for number, line in enumerate(label.read_text().splitlines(), start=1):
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
    """One COCO JSON or a folder of them; category ids mapped to 0..C-1 in sorted id order."""
    files = [source] if source.is_file() else sorted(source.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{source}: no COCO JSON file found")
    documents = []
    for file in files:
        try:
            documents.append((file, json.loads(file.read_text())))
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err})") from None
    categories = {}
    for file, doc in documents:
        for cat in doc.get("categories", []):
            categories.setdefault(int(cat["id"]), str(cat["name"]))
    ids = sorted(categories)
    dataset, report, seen = ImportedDataset([categories[i] for i in ids], []), ImportReport(), {}
    index_of = {cat_id: i for i, cat_id in enumerate(ids)}
    root = source if source.is_dir() else source.parent
    for file, doc in documents:
        images = {int(img["id"]): img for img in doc.get("images", [])}
        per_image: dict[int, list] = {i: [] for i in images}
        for ann in doc.get("annotations", []):
            if int(ann.get("image_id", -1)) not in images:
                report.add(file, "annotation for missing image",
                           f"annotation {ann.get('id')} refers to image id {ann.get('image_id')} not in 'images'",
                           quarantine=False)
                continue
            per_image[int(ann["image_id"])].append(ann)
        for image_id, img in images.items():
            path = _find_image(img["file_name"], file.parent, root)
            if path is None:
                report.add(file, "missing image", f"image {img['file_name']!r} (id {image_id}) not found",
                           quarantine=False)
                continue
            boxes, classes, where = [], [], []
            for ann in per_image[image_id]:
                x, y, w, h = (float(v) if v is not None else math.nan for v in ann.get("bbox", [math.nan] * 4))
                boxes.append([x, y, x + w, y + h])
                classes.append(index_of.get(int(ann.get("category_id", -1)), -1))
                where.append(f"annotation {ann.get('id')} (category {ann.get('category_id')})")
            _add_image(dataset, report, seen, path, _split_of(file.stem), np.asarray(boxes).reshape(-1, 4),
                       np.asarray(classes), where, labeled=True)
    return dataset, report


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
        parsed.append((xml_file, tree.findtext("filename") or f"{xml_file.stem}.jpg", objects))
    class_names = list(names) if names else sorted({o[0] for _, _, objs in parsed for o in objs})
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
            report.add(path, "unknown class", f"{unknown[0][2]}: class {unknown[0][0]!r} not in {class_names}")
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
