"""Pascal VOC: the reader of an Annotations/ + JPEGImages/ (+ ImageSets/Main/) dataset.

There is no VOC exporter; a batch goes out as Label Studio, COCO and YOLO.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgral_formats.common import (
    FormatError,
    ImportedDataset,
    ImportReport,
    add_image,
    add_unlabeled_images,
    image_files,
    leaves_folder,
)


class VocFormatError(FormatError):
    """A VOC dataset cannot be used as a whole.

    No current check raises it: a bad XML file or object is reported per file and the rest imported.
    """


def load_voc(root: Path, names: Sequence[str] | None = None) -> tuple[ImportedDataset, ImportReport]:
    """Annotations/*.xml + JPEGImages/ (+ ImageSets/Main/{train,val,test}.txt for splits).

    Every image in JPEGImages/ that no XML names is imported unlabeled: the pool to select from.
    """
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
        if leaves_folder(file_name):
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
    dataset, seen, claimed = ImportedDataset(class_names, []), {}, set()
    for xml_file, file_name, objects in parsed:
        path = root / "JPEGImages" / file_name
        claimed.add(path.resolve())
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
        add_image(dataset, report, seen, path, splits.get(path.stem), boxes, classes, [o[2] for o in objects],
                  labeled=True)
    if (root / "JPEGImages").is_dir():
        add_unlabeled_images(dataset, report, seen, image_files(root / "JPEGImages"), claimed,
                             lambda path: "pool" if splits.get(path.stem) == "pool" else None)
    return dataset, report


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan
