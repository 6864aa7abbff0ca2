"""A plain folder of images with no annotations (`mgral init --unlabeled DIR`): the unlabeled pool of a team
whose labeled and unlabeled images live apart, or the whole of a project that starts with no labels.

Images are found recursively, with every suffix of `IMAGE_SUFFIXES` in any case. An image whose
content (SHA-256 of the file) is already in the dataset is imported once: a copy of a labeled image
stays labeled, and the report says which files were the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from mgral_formats.common import IMAGE_SUFFIXES, FormatError, ImportedDataset, ImportReport, add_image, image_files

_SHOWN = 5  # pairs of identical files named in a note


class ImageFolderError(FormatError):
    """The unlabeled folder cannot be used at all (missing, not a folder, no image in it)."""


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def check_class_names(names: Sequence[str], where: str) -> list[str]:
    """`names` as a list of non-empty, unique class names without line breaks; FormatError naming `where`."""
    out = [str(n).strip() for n in names]
    bad = [n for n in out if not n or "\n" in n or "\r" in n]
    if not out or bad:
        raise FormatError(f"{where}: class names must be non-empty text without line breaks, got {list(names)!r:.200}")
    duplicates = sorted({n for n in out if out.count(n) > 1})
    if duplicates:
        raise FormatError(f"{where}: class names must be unique; {duplicates[:5]} appear more than once")
    return out


def load_unlabeled_folder(folder: Path, class_names: Sequence[str]) -> tuple[ImportedDataset, ImportReport]:
    """A dataset of only the images under `folder`, all unlabeled, with the project's `class_names`
    (nothing else names them); see `add_unlabeled_folder`."""
    dataset, report = ImportedDataset(check_class_names(class_names, "--classes"), []), ImportReport()
    add_unlabeled_folder(dataset, report, folder)
    dataset.root = Path(folder).absolute()
    return dataset, report


def add_unlabeled_folder(dataset: ImportedDataset, report: ImportReport, folder: Path) -> None:
    """Add every image under `folder` to `dataset` as unlabeled, checked like any imported image.

    An image with the same content as one already in `dataset` (or earlier in `folder`) is not added
    again: the dataset's copy is kept, labeled or not, and a note in `report` names the pairs. An
    image is named by its path under `folder` without the suffix (`sub/a`); a name the dataset
    already uses for other content becomes `unlabeled/<name>`.

    Raises:
        ImageFolderError: `folder` does not exist, is not a folder, or holds no image file at all.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImageFolderError(f"{folder}: folder of unlabeled images not found")
    if not folder.is_dir():
        raise ImageFolderError(f"{folder}: --unlabeled takes a folder of images, not a file")
    problems_before = len(report.problems)
    files = image_files(folder, report)
    if not files and len(report.problems) == problems_before:
        raise ImageFolderError(f"{folder}: no image file found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                               "in any case, in every subfolder)")
    known = {}
    for record in dataset.images:
        try:
            known.setdefault(content_hash(record.source_path), record)
        except OSError:
            continue
    seen = {record.name: record.source_path for record in dataset.images}
    same_labeled, same_other, added = [], [], 0
    for path in files:
        try:
            digest = content_hash(path)
        except OSError as err:
            report.add(path, "unreadable image", f"cannot read the file ({err.strerror or err})")
            continue
        if digest in known:
            (same_labeled if known[digest].labeled else same_other).append((path, known[digest].source_path))
            continue
        name = str(PurePosixPath(path.relative_to(folder).as_posix()).with_suffix(""))
        if name in seen:
            name = f"unlabeled/{name}"
        count = len(dataset.images)
        add_image(dataset, report, seen, path, None, None, None, [], labeled=False, name=name)
        if len(dataset.images) > count:
            dataset.images[-1].original_name = path.relative_to(folder).as_posix()  # as the team knows it
            known[digest] = dataset.images[-1]
            added += 1
    report.notes.append(f"{added} images added unlabeled from {folder}")
    if same_labeled:
        report.notes.append(f"{len(same_labeled)} images of {folder} are the same files (by content) as labeled "
                            f"images of the dataset; each imported once, labeled: {_pairs(same_labeled)}")
    if same_other:
        report.notes.append(f"{len(same_other)} images of {folder} have the same content as an image imported "
                            f"before (unlabeled); each imported once: {_pairs(same_other)}")


def _pairs(pairs: list[tuple[Path, Path]]) -> str:
    shown = ", ".join(f"{a} = {b}" for a, b in pairs[:_SHOWN])
    return shown + (f" and {len(pairs) - _SHOWN} more" if len(pairs) > _SHOWN else "")
