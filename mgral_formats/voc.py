"""Pascal VOC: the reader of an Annotations/ + JPEGImages/ (+ ImageSets/Main/) dataset.

Which image an XML describes: `Annotations/a.xml` names `JPEGImages/a.*` by its own file name, and
its `<filename>` names an image too. When the two agree (same stem, or no `<filename>`) that is the
image. When they disagree and only one of the two images exists, the boxes go to that one, with a
warning. When both exist the XML is refused (its boxes could belong to either) and both images are
imported unlabeled. An image claimed by two XMLs is quarantined, naming both. So boxes are never
attached to an image only one of two disagreeing names points at while the other also exists.

There is no VOC exporter; a batch goes out as Label Studio, COCO and YOLO.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from mgral_formats.common import (
    IMAGE_SUFFIXES,
    FormatError,
    ImportedDataset,
    ImportReport,
    add_image,
    add_unlabeled_images,
    dataset_files,
    image_files,
    leaves_folder,
    link_target_outside,
    report_outside_link,
)


class VocFormatError(FormatError):
    """A VOC dataset cannot be used as a whole.

    No current check raises it: a bad XML file or object is reported per file and the rest imported.
    """


def load_voc(root: Path, names: Sequence[str] | None = None) -> tuple[ImportedDataset, ImportReport]:
    """Annotations/*.xml + JPEGImages/ (+ ImageSets/Main/{train,val,test}.txt for splits).

    Every image in JPEGImages/ that no XML names is imported unlabeled: the pool to select from.
    The rule for an XML whose `<filename>` disagrees with its own name is in the module docstring.
    """
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise FileNotFoundError(f"{root}: VOC layout needs an Annotations/ folder")
    report = ImportReport()
    parsed = []
    for xml_file in dataset_files(annotations, {".xml"}, report, root, recursive=False):
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
        file_name = (tree.findtext("filename") or "").strip().replace("\\", "/")
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
    images_dir = root / "JPEGImages"
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
    claims: dict[Path, list[tuple[Path, list]]] = {}  # image (resolved) -> the XMLs that name it, with objects
    chosen: dict[Path, Path] = {}  # image (resolved) -> image path as found
    for xml_file, file_name, objects in parsed:
        path = _image_of(xml_file, file_name, images_dir, by_stem, report)
        if path is not None:
            claims.setdefault(path.resolve(), []).append((xml_file, objects))
            chosen.setdefault(path.resolve(), path)
    dataset, seen, claimed = ImportedDataset(class_names, []), {}, set()
    for resolved, claimants in claims.items():
        path = chosen[resolved]
        claimed.add(resolved)
        target = link_target_outside(path, root)
        if target is not None:
            report_outside_link(report, path, target, root)
            continue
        if len(claimants) > 1:
            report.add(path, "annotation conflict", f"named by {len(claimants)} annotation files "
                       f"({', '.join(x.name for x, _ in claimants)}); none is used, since their boxes cannot all "
                       "belong to it: fix their <filename> or file names")
            seen.setdefault(path.stem, path)
            continue
        xml_file, objects = claimants[0]
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
    if images_dir.is_dir():
        add_unlabeled_images(dataset, report, seen, image_files(images_dir, report, root), claimed,
                             lambda path: "pool" if splits.get(path.stem) == "pool" else None)
    return dataset, report


def _image_of(xml_file: Path, file_name: str, images_dir: Path, by_stem: dict[str, list[Path]],
              report: ImportReport) -> Path | None:
    """The image `xml_file` describes by the module's rule, or None after reporting why there is none."""
    own = by_stem.get(xml_file.stem, [])
    named = images_dir / file_name if file_name else None
    if named is not None and not named.is_file():
        named = None
    if len(own) > 1 and (named is None or named not in own):
        report.add(xml_file, "ambiguous image", f"JPEGImages/ holds {len(own)} images named {xml_file.stem}.* "
                   f"({', '.join(p.name for p in own)}) and <filename> {file_name!r} picks none; not used",
                   quarantine=False)
        return None
    if not file_name or PurePosixPath(file_name).stem == xml_file.stem:
        if named is not None or own:
            return named if named is not None else own[0]
        report.add(xml_file, "annotation for missing image",
                   f"{file_name or xml_file.stem + '.*'} not found in JPEGImages/", quarantine=False)
        return None
    own_path = own[0] if own else None  # one at most here: several were refused above
    if own_path is not None and named is not None and own_path != named:
        report.add(xml_file, "filename conflict", f"<filename> {file_name!r} disagrees with the XML's own name "
                   f"{xml_file.stem!r}, and both JPEGImages/{file_name} and JPEGImages/{own_path.name} exist: its "
                   "boxes could belong to either, so the XML is not used (both images are imported unlabeled); "
                   "rename the XML or correct its <filename>", quarantine=False)
        return None
    found = own_path or named
    if found is None:
        report.add(xml_file, "annotation for missing image", f"{file_name} not found in JPEGImages/ (nor "
                   f"{xml_file.stem}.*, after the XML's own name)", quarantine=False)
        return None
    report.add(xml_file, "filename mismatch", f"<filename> {file_name!r} disagrees with the XML's own name "
               f"{xml_file.stem!r}; only JPEGImages/{found.relative_to(images_dir)} exists, so the boxes go to it",
               quarantine=False)
    return found


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan
