"""Dataset and annotation file formats, one module per format; the name -> reader and name -> exporter tables.

A new export format is one module with an `export_<name>(batch, out_dir)` writer and one line in EXPORTERS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from mgral_formats.coco import export_coco, load_coco, read_coco_annotations
from mgral_formats.common import AnnotationSet, ExportBatch, FormatError, ImportedDataset, ImportReport
from mgral_formats.image_folder import add_unlabeled_folder, check_class_names, load_unlabeled_folder
from mgral_formats.label_studio import export_label_studio, read_label_studio_annotations
from mgral_formats.voc import load_voc
from mgral_formats.yolo import export_yolo, load_yolo, read_yolo_annotations

READERS: dict[str, Callable[[Path], tuple[ImportedDataset, ImportReport]]] = {
    "yolo": load_yolo,
    "coco": load_coco,
    "voc": load_voc,
}

EXPORTERS: dict[str, Callable[[ExportBatch, Path], None]] = {
    "label_studio": export_label_studio,
    "coco": export_coco,
    "yolo": export_yolo,
}


def detect_format(source: Path) -> str:
    """The READERS name for a dataset's layout; raises FormatError when it cannot tell."""
    if source.is_file() and source.suffix == ".json":
        return "coco"
    if (source / "data.yaml").exists() or source.suffix in (".yaml", ".yml"):
        return "yolo"
    if (source / "Annotations").is_dir():
        return "voc"
    if (any(source.glob("*.json")) or any(source.glob("annotations/*.json"))
            or any(source.glob("*/_annotations.coco.json"))):  # the last: Roboflow's train/ valid/ test/
        return "coco"
    raise FormatError(f"{source}: cannot tell the layout (no data.yaml, Annotations/ or COCO JSON); pass --format")


def load_dataset(source: str | Path, fmt: str = "auto", class_names: Sequence[str] | None = None
                 ) -> tuple[ImportedDataset, ImportReport]:
    """Load and validate a dataset in YOLO, COCO or VOC layout (or detect which).

    `class_names` (from `mgral init --classes`) fixes VOC's classes and their order (else the object
    names found, sorted); YOLO and COCO name their classes themselves, and must agree with it.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: dataset not found")
    if fmt != "auto" and fmt not in READERS:
        raise FormatError(f"unknown format {fmt!r}; use one of {sorted(READERS)} or auto")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if class_names is not None:
        class_names = check_class_names(class_names, "--classes")
    if fmt == "voc" and class_names is not None:
        dataset, report = load_voc(source, class_names)
    else:
        dataset, report = READERS[fmt](source)
    if class_names is not None and list(class_names) != list(dataset.class_names):
        raise FormatError(f"{source}: the dataset names its classes {dataset.class_names}, --classes gives "
                          f"{list(class_names)}; leave --classes out, or make them agree")
    dataset.root = (source if source.is_dir() else source.parent).absolute()
    return dataset, report


def read_annotations(source: str | Path) -> AnnotationSet:
    """Finished annotations from a YOLO label folder (or YOLO export with classes.txt), a Label Studio
    JSON or JSON-MIN export, or a COCO JSON file.

    Raises FormatError only when the source as a whole is unusable (unreadable, empty, of no known
    shape); malformed tasks, entries and boxes come back inside the entries. Nothing is checked
    against a project here.
    """
    source = Path(source)
    if source.is_dir():
        return read_yolo_annotations(source)
    try:
        doc = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(f"{source}: cannot read as JSON ({err})") from None
    if isinstance(doc, list):
        return read_label_studio_annotations(source, doc)
    if isinstance(doc, dict) and "images" in doc:
        return read_coco_annotations(source, doc)
    if isinstance(doc, dict) and ("data" in doc or "annotations" in doc):  # one Label Studio task on its own
        return read_label_studio_annotations(source, [doc])
    raise FormatError(f"{source}: neither a Label Studio export (a list of tasks) nor COCO JSON")
