"""YOLO: txt label files (`cls cx cy w h`, normalized), the data.yaml dataset reader and the pre-label exporter.

One line parser serves the three readers: a single label file, a whole dataset, a folder of finished labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from mgral_formats.common import (
    AnnotationEntry,
    AnnotationSet,
    ExportBatch,
    FormatError,
    ImportedDataset,
    ImportReport,
    add_image,
    image_files,
    link_target_outside,
    load_yaml_without_aliases,
    read_size_or_report,
    report_outside_link,
)
from mgral_workspace.atomic import write_text_atomic



class YoloFormatError(FormatError):
    """A data.yaml or label file is malformed; the message names the file (and line)."""


def parse_yolo_line(line: str, where: str) -> tuple[int, float, float, float, float]:
    """(cls, cx, cy, w, h) from one non-blank label line; raises YoloFormatError prefixed with `where`."""
    parts = line.split()
    if len(parts) != 5:
        raise YoloFormatError(f"{where}: expected 'class cx cy w h', got {line.strip()!r}")
    try:
        cls = int(parts[0])
        cx, cy, w, h = (float(v) for v in parts[1:])
    except ValueError:
        raise YoloFormatError(f"{where}: non-numeric value in {line.strip()!r}") from None
    return cls, cx, cy, w, h


def _read_label_rows(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(boxes_xyxy (N, 4) float64 pixels, classes (N,), line numbers); the first bad line raises."""
    boxes, classes, numbers = [], [], []
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise YoloFormatError(f"{path}: not a text file ({err})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cls, cx, cy, w, h = parse_yolo_line(line, f"{path}:{number}")
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        classes.append(cls)
        numbers.append(number)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64), numbers


def read_yolo_label(path: str | Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (boxes_xyxy (N, 4) float32 pixels, classes (N,) int64); a missing file is an error."""
    boxes, classes, _ = _read_label_rows(Path(path), width, height)
    return boxes.astype(np.float32), classes


def format_yolo_label(boxes_xyxy: np.ndarray, classes: np.ndarray, width: int, height: int) -> str:
    """The text of a label file for pixel boxes; empty for no boxes."""
    if not len(classes):
        return ""
    lines = []
    for (x1, y1, x2, y2), cls in zip(np.asarray(boxes_xyxy, float), np.asarray(classes)):
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yolo_label(path: str | Path, boxes_xyxy: np.ndarray, classes: np.ndarray, width: int, height: int) -> None:
    """Write one label file atomically."""
    write_text_atomic(path, format_yolo_label(boxes_xyxy, classes, width, height))


def load_yolo(root: Path) -> tuple[ImportedDataset, ImportReport]:
    """A data.yaml with names and train/val/test folders or list files; labels by /images/ -> /labels/."""
    data_yaml = root / "data.yaml" if root.is_dir() else root
    if not data_yaml.exists():
        raise FileNotFoundError(f"{data_yaml}: YOLO layout needs a data.yaml")
    try:
        data = load_yaml_without_aliases(data_yaml.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise YoloFormatError(f"{data_yaml}: not valid YAML ({str(err)[:400]})") from None
    except OSError as err:  # a folder named data.yaml, no permission ...
        raise YoloFormatError(f"{data_yaml}: cannot be read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise YoloFormatError(f"{data_yaml}: expected a mapping with 'names' and 'train'/'val'/'test'")
    report = ImportReport()
    names = class_names_from_yaml(data_yaml, data.get("names"), report)
    path_entry = data.get("path", ".")
    if not isinstance(path_entry, str):
        raise YoloFormatError(f"{data_yaml}: 'path' must be one folder (a string), got {path_entry!r:.200}")
    base = (data_yaml.parent / path_entry).resolve()
    dataset, seen, real_folders = ImportedDataset(names, []), {}, {}
    for split in ("train", "val", "test"):
        if not data.get(split):
            continue
        entry = data[split]
        if not (isinstance(entry, str) or (isinstance(entry, list) and all(isinstance(e, str) for e in entry))):
            raise YoloFormatError(f"{data_yaml}: {split!r} must be a folder or list file (a string) or a list of "
                                  f"them, got {entry!r:.200}")
        for path in _yolo_images(base, data[split], data_yaml, report):
            label = Path(str(path).rsplit("/images/", 1)[0] + "/labels/" + str(path).rsplit("/images/", 1)[-1])
            label = label.with_suffix(".txt")
            boxes = classes = None
            where: list[str] = []
            if path.stem in seen:
                report.add(path, "duplicate name", f"image name {path.stem!r} also used by {seen[path.stem]}")
                continue
            target = link_target_outside(label, base, real_folders)
            if target is not None:
                report.add(path, "link leaves the dataset", f"its label file {label} is a symbolic link to "
                           f"{target}, outside the dataset folder {base}; not read")
                seen[path.stem] = path
                continue
            size = read_size_or_report(path, report)
            if size is None:
                seen[path.stem] = path
                continue
            if label.exists():
                try:
                    boxes, classes, numbers = _read_label_rows(label, *size)
                except YoloFormatError as err:
                    report.add(path, "bad label file", str(err))
                    seen[path.stem] = path
                    continue
                where = [f"{label.name} line {number}" for number in numbers]
            add_image(dataset, report, seen, path, "pool" if split == "train" else split, boxes, classes, where,
                      labeled=label.exists(), size=size)
    return dataset, report


def class_names_from_yaml(data_yaml: Path, names, report: ImportReport) -> list[str]:
    """data.yaml's `names` as a list indexed by class id, the ids kept as given.

    A list is taken as ids 0..n-1. A mapping {id: name} keeps its ids (integer keys, or strings of
    digits, compared as numbers, never as text); ids missing below the largest become `unused_<id>`
    classes, reported. Names must be non-empty strings (numbers are read as text), unique, without
    line breaks: duplicate names would mis-assign boxes on export and re-import.

    Raises:
        YoloFormatError: naming data.yaml and what is wrong.
    """
    if not names:
        raise YoloFormatError(f"{data_yaml}: 'names' is missing or empty")
    if isinstance(names, dict):
        ids = {}
        for key in names:
            if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
                raise YoloFormatError(f"{data_yaml}: 'names' keys must be class ids (0, 1, ...), got {key!r:.100}")
            if int(key) in ids:
                raise YoloFormatError(f"{data_yaml}: class id {int(key)} appears twice in 'names'")
            ids[int(key)] = names[key]
        gaps = [i for i in range(max(ids) + 1) if i not in ids]
        if gaps:
            report.add(data_yaml, "class ids with gaps", f"class ids {gaps[:10]} have no name; kept as "
                       f"unused_<id> so every other id keeps its class", quarantine=False)
        values = [ids.get(i, f"unused_{i}") for i in range(max(ids) + 1)]
    elif isinstance(names, list):
        values = list(names)
    else:
        raise YoloFormatError(f"{data_yaml}: 'names' must be a list or an {{id: name}} mapping, got {names!r:.200}")
    out = []
    for i, name in enumerate(values):
        if isinstance(name, bool) or not isinstance(name, (str, int, float)):
            raise YoloFormatError(f"{data_yaml}: class {i} has no usable name ({name!r:.100}); names are text")
        text = str(name).strip()
        if not text or "\n" in text or "\r" in text:
            raise YoloFormatError(f"{data_yaml}: class {i} name {str(name)!r:.100} is empty or has a line break")
        out.append(text)
    duplicates = sorted({n for n in out if out.count(n) > 1})
    if duplicates:
        raise YoloFormatError(f"{data_yaml}: class names must be unique; {duplicates[:5]} appear more than once")
    return out


def _yolo_images(base: Path, entry, data_yaml: Path, report: ImportReport) -> list[Path]:
    """The images a split entry names: every image under a folder, or the lines of a list file.

    Inside the dataset folder `base`, symbolic links that lead out of it are not followed (reported,
    the linked file quarantined); a folder or list entry outside `base` as written is the user's own
    configuration and walked as its own root.
    """
    entries = entry if isinstance(entry, list) else [entry]
    paths: list[Path] = []
    for item in entries:
        target = Path(os.path.normpath(base / item))
        root = base if _inside(target, base) else target
        if target.is_dir():
            paths += image_files(target, report, root)
        elif target.suffix == ".txt" and target.exists():
            for line in target.read_text().splitlines():
                if not line.strip():
                    continue
                path = Path(os.path.normpath(base / line.strip()))
                outside = link_target_outside(path, base)
                if outside is not None:
                    report_outside_link(report, path, outside, base)
                else:
                    paths.append(path)
        else:
            report.add(data_yaml, "missing split", f"{item}: no such folder or list file", quarantine=False)
    return paths


def _inside(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


def read_yolo_annotations(folder: Path) -> AnnotationSet:
    """One entry per label file of a YOLO folder, boxes normalized; a bad line becomes a malformed box.

    Either a folder of `*.txt` label files (class ids are the project's), or an export such as Label
    Studio's YOLO export: `labels/*.txt` beside `classes.txt` (and `images/`, `notes.json`). With a
    `classes.txt`, class ids are read as its names (one per line, id = line number from 0), so the
    importer checks them against the project's classes by name.

    Raises:
        YoloFormatError: no label file in the folder, or an unreadable or malformed classes.txt.
    """
    label_dir = folder / "labels" if (folder / "labels").is_dir() else folder
    classes_file = next((f for f in (folder / "classes.txt", label_dir / "classes.txt") if f.is_file()), None)
    names = _read_classes_txt(classes_file) if classes_file else None
    labels = sorted(p for p in label_dir.glob("*.txt") if p.name != "classes.txt")
    if not labels:
        xml = any(folder.glob("*.xml")) or any(folder.glob("Annotations/*.xml"))
        raise YoloFormatError(f"{folder}: no YOLO label file (*.txt{', or labels/*.txt' if label_dir == folder else ''})"
                              + ("; Pascal VOC XML is not an import format: export as YOLO, COCO JSON or Label Studio "
                                 "JSON" if xml else ""))
    entries = []
    for label in labels:
        where = f"{label_dir.name}/{label.name}" if label_dir != folder else label.name
        entry = AnnotationEntry(where, label.stem, [], [], normalized=True)
        entries.append(entry)
        try:
            text = label.read_text()
        except UnicodeDecodeError as err:
            entry.problem = f"not a text file ({err})"
            continue
        except OSError as err:  # a directory named like a label file, a file that cannot be read
            entry.problem = "a directory, not a label file" if label.is_dir() else f"cannot be read ({err})"
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.split():
                continue
            try:
                cls, cx, cy, w, h = parse_yolo_line(line, f"{label.name}:{number}")
            except YoloFormatError:
                entry.boxes.append(None)
                entry.classes.append(f"<{label.name} line {number}: malformed>")
                continue
            if names is not None and not 0 <= cls < len(names):
                entry.boxes.append(None)
                entry.classes.append(f"<{label.name} line {number}: class id {cls} not in {classes_file.name} "
                                     f"(ids 0..{len(names) - 1})>")
                continue
            entry.boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            entry.classes.append(names[cls] if names is not None else cls)
    return AnnotationSet(entries, names, str(classes_file) if classes_file else "")


def _read_classes_txt(path: Path) -> list[str]:
    """classes.txt: one class name per line, the line number (from 0) is the id; trailing blank lines ignored."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise YoloFormatError(f"{path}: cannot be read as text ({err})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names or any(not n for n in names):
        raise YoloFormatError(f"{path}: needs one non-empty class name per line (line "
                              f"{names.index('') + 1 if '' in names else 1} is empty)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise YoloFormatError(f"{path}: class names must be unique; {duplicates[:5]} appear more than once")
    return names


def export_yolo(batch: ExportBatch, out_dir: Path) -> None:
    """yolo_prelabels/<image_id>.txt: one label file of pre-labels per image."""
    (out_dir / "yolo_prelabels").mkdir()
    for image in batch.images:
        det = image.prelabels
        (out_dir / "yolo_prelabels" / f"{image.image_id}.txt").write_text(
            format_yolo_label(det.boxes_xyxy, det.classes, image.width, image.height))
