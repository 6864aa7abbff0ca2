"""What every format shares: the error base, the imported-dataset records and report, image and box checks.

Also the neutral shapes the format modules exchange with the project: `AnnotationEntry` (one image's
finished annotation, as read) and `ExportBatch` (what an exporter writes).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from mgral_core.detections import Detections

# Ultralytics replaces PIL.Image.open with a wrapper that tries to install a HEIF plugin on
# unidentified files; validation must use Pillow's own opener whatever was imported first.
_pil_open = Image.open
if not _pil_open.__module__.startswith("PIL"):
    _pil_open = getattr(sys.modules.get(_pil_open.__module__), "_image_open", _pil_open)

BOX_TOLERANCE = 1.0  # pixels a box may stick out of the image before it is an error (then clipped)
# Pillow's default decompression-bomb threshold (about 9459 x 9459). Checked from the header, before
# decoding, and independently of Image.MAX_IMAGE_PIXELS (which Ultralytics may set to None).
MAX_IMAGE_PIXELS = 89_478_485


class FormatError(ValueError):
    """A file cannot be read as its format; every format module's error derives from this one."""


class ImageTooLarge(FormatError):
    """An image above MAX_IMAGE_PIXELS; refused before it is decoded."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses YAML aliases (`*name`): a dataset's YAML never needs them, and nested aliases
    expand exponentially once the value is walked or printed (an "alias bomb")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here; write the value out",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def load_yaml_without_aliases(text: str):
    """`yaml.safe_load` that refuses aliases (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=_NoAliasLoader)


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
    original_name: str | None = None  # what exports may call it; None: its path relative to the dataset's root


@dataclass
class ImportedDataset:
    class_names: list[str]
    images: list[ImageRecord]
    root: Path | None = None  # the dataset folder: each image's original name is its path relative to it


@dataclass
class ImportReport:
    problems: list[Problem] = field(default_factory=list)
    quarantined: dict[str, list[str]] = field(default_factory=dict)  # source path -> reasons
    imported: int = 0
    with_objects: int = 0  # labeled images with at least one box
    empty: int = 0  # labeled images with no object
    unlabeled: int = 0  # images without any annotation: the unlabeled pool
    notes: list[str] = field(default_factory=list)  # what the import decided for the user (not problems)
    uncopied: set[str] = field(default_factory=set)  # absolute paths of links out of the dataset: never copied

    def add(self, file: str | Path, kind: str, message: str, quarantine: bool = True) -> None:
        self.problems.append(Problem(str(file), kind, message))
        if quarantine:
            self.quarantined.setdefault(str(file), []).append(f"{kind}: {message}")

    def to_text(self) -> str:
        lines = [f"imported {self.imported} images ({self.with_objects + self.empty} labeled: {self.with_objects} "
                 f"with objects, {self.empty} empty; {self.unlabeled} unlabeled); {len(self.quarantined)} "
                 f"quarantined; {len(self.problems)} problems"]
        lines += [f"  {p.file}: [{p.kind}] {p.message}" for p in self.problems]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class AnnotationEntry:
    """One image's finished annotation as a format reader found it; not yet checked against a project.

    A malformed box is kept in place as `None` in `boxes` with a "<message>" in `classes`, so the
    importer can report it by position. The image is named in up to three ways, matched by the
    importer in this order: `mgral_id` (the project's own id), `name` (a path as given, relative to
    the project or the dataset; refused if absolute or with '..'), `file_name` (the original file
    name of an image that lives elsewhere: an upload, a bucket, a web address; never a path).
    """

    where: str  # file / task for messages
    name: str  # image reference as given (path, or the whole URL for messages when file_name is set)
    boxes: list  # [x1, y1, x2, y2] pixels, or normalized (0..1) when `normalized`; None if malformed
    classes: list  # class indices or names; "<message>" for a malformed box
    normalized: bool = False
    problem: str | None = None  # the whole entry is unusable (malformed task or image entry)
    mgral_id: str | None = None
    file_name: str | None = None  # original file name of a remote image (Label Studio's upload prefix removed)
    reference: str = ""  # how the image was referenced, for messages: "Label Studio upload", "s3 URL" ...
    annotated_size: tuple[float, float] | None = None  # (width, height) the annotator saw, when the format says
    pending: str | None = None  # not annotated yet (why): nothing to import, the image stays in its batch
    notes: list[str] = field(default_factory=list)  # rules applied while reading (which annotation won ...)


@dataclass
class AnnotationSet:
    """Everything a reader found in one export: its entries and, when the export declares them, its class names."""

    entries: list[AnnotationEntry]
    class_names: list[str] | None = None  # e.g. a YOLO export's classes.txt: entries then name their classes
    class_names_file: str = ""


@dataclass(frozen=True)
class ImageReference:
    """Where an export says an image is: a `path` meant to be inside the project or dataset, or the
    original `file_name` of an image stored elsewhere (`how` says which kind of address it was)."""

    path: str | None
    file_name: str | None
    how: str


UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?=.)")  # Label Studio's /data/upload/N/<8 hex>-<original name>
_REMOTE_SCHEMES = {"http": "URL", "https": "URL", "s3": "s3 URL", "gs": "gs URL", "gcs": "gcs URL",
                   "azure-blob": "Azure blob URL", "ftp": "URL"}


def strip_upload_prefix(name: str) -> str:
    """An uploaded file's original name: Label Studio stores `photo.jpg` as `1a2b3c4d-photo.jpg`."""
    return UPLOAD_PREFIX.sub("", name, count=1)


def parse_image_reference(text: str) -> ImageReference:
    """Read an image address as annotation tools write it; raises FormatError for a malformed one.

    `/data/local-files/?d=rel/path.png` (Label Studio's local files) and plain relative paths are
    paths. `/data/upload/N/<8 hex>-name.jpg` (Label Studio uploads), `s3://bucket/key`, `gs://...`
    and `https://host/.../name.jpg` are images stored elsewhere: only their file name is kept (the
    upload prefix removed), to be matched against the project's original file names.
    """
    try:
        parts = urlsplit(text)
        query = parse_qs(parts.query)
    except ValueError as err:
        raise FormatError(f"malformed image URL {text[:200]!r} ({err})") from None
    scheme = parts.scheme.lower()
    if scheme == "data":
        raise FormatError("the image is embedded in the task (a data: URL) and cannot be matched to a project image; "
                          "add the project's mgral_id to the task data")
    path = unquote(parts.path)
    remote = scheme in _REMOTE_SCHEMES  # anything else before a ':' (a drive letter, 'img:1.png') is a plain path
    if (remote or not scheme) and path.rstrip("/").endswith("/data/local-files") and "d" in query:
        return ImageReference(unquote(query["d"][0]), None, "Label Studio local file")
    upload = (remote or not scheme) and "/data/upload/" in path
    if remote or upload:
        name = PurePosixPath(path).name
        if not name:
            raise FormatError(f"image URL {text[:200]!r} names no file")
        if upload:
            return ImageReference(None, strip_upload_prefix(name), "Label Studio upload")
        return ImageReference(None, name, _REMOTE_SCHEMES[scheme])
    return ImageReference(text, None, "path")  # as written: '#', '?' and '%' may be part of a file name


@dataclass(frozen=True)
class BatchImage:
    """One image handed to annotators: `file` relative to the project, pre-labels in pixels, its split."""

    image_id: str
    file: str
    width: int
    height: int
    prelabels: Detections
    split: str = "pool"  # 'val' / 'test': an evaluation image to label with the batch (never trained on)


@dataclass(frozen=True)
class ExportBatch:
    """Everything an exporter needs; exporters write files and never read the project."""

    images: Sequence[BatchImage]
    class_names: Sequence[str]
    model_version: str


def is_number(value) -> bool:
    """True for an int or float that is not a bool (JSON numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


EXIF_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def exif_orientation(image: Image.Image, file_bytes: bytes | None = None) -> int:
    """The EXIF Orientation tag (1 = upright, also when absent or unreadable).

    Given the file's bytes, a PNG in which no chunk can hold an orientation (no eXIf chunk, no text
    keyed 'exif', 'Raw profile type exif' or XMP) is upright without more: Pillow would decode the
    whole image to look for an eXIf chunk after the pixels.
    """
    if file_bytes is not None and image.format == "PNG" and not any(
            key in file_bytes for key in (b"eXIf", b"exif", b"xmp")):
        return 1
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError):
        return 1
    return value if value in range(1, 9) else 1


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image (after its EXIF orientation, as annotators, OpenCV and the
    project's stored copy see it), after fully decoding the file; raises ValueError with the reason.

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
                return (height, width) if exif_orientation(image) in _TURNED else (width, height)
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"image too large, refused by Pillow as a possible decompression bomb ({err}); "
                            f"{advice}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (cannot identify the file format)") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"unreadable or truncated image ({err})") from None


MIN_IMAGE_SIDE = 10  # Ultralytics' own check (ultralytics/data/utils.py) rejects images under 10 px a side


def read_size_or_report(path: Path, report: ImportReport) -> tuple[int, int] | None:
    """image_size, or None after reporting why the image cannot be used (unreadable, too large, too small)."""
    try:
        width, height = image_size(path)
        if min(width, height) < MIN_IMAGE_SIDE:
            report.add(path, "image too small", f"{width}x{height} pixels; the detector needs at least "
                       f"{MIN_IMAGE_SIDE} pixels a side")
            return None
        return width, height
    except ImageTooLarge as err:
        report.add(path, "image too large", str(err))
    except ValueError as err:
        report.add(path, "unreadable image", str(err))
    return None


def leaves_folder(name: str) -> bool:
    """True for an absolute name or one with a '..' part: it could point outside the dataset."""
    return name.startswith("/") or ".." in PurePosixPath(name).parts


def _check_boxes(file: str, boxes: np.ndarray, classes: np.ndarray, width: int, height: int,
                 num_classes: int, report: ImportReport, where: Sequence[str]) -> np.ndarray | None:
    """Validated boxes (clipped within tolerance), or None after reporting the first problem."""
    if not len(boxes) and not len(classes):  # an unlabeled or empty image: nothing to check
        return np.zeros((0, 4), np.float32)
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


def add_image(dataset: ImportedDataset, report: ImportReport, seen: dict[str, Path], path: Path,
              split: str | None, boxes: np.ndarray | None, classes: np.ndarray | None, where: Sequence[str],
              labeled: bool, size: tuple[int, int] | None = None, name: str | None = None) -> None:
    """Check one image and its boxes and append it to `dataset`, or report why it is quarantined.

    `seen` maps image names already taken to their paths; a second image of the same name is refused.
    The image's name is `name`, by default its file name without the suffix.
    """
    stem = name or path.stem
    if stem in seen:
        report.add(path, "duplicate name", f"image name {stem!r} also used by {seen[stem]}")
        return
    seen[stem] = path
    size = size or read_size_or_report(path, report)
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
    if not labeled:
        report.unlabeled += 1
    elif len(classes):
        report.with_objects += 1
    else:
        report.empty += 1


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def link_target_outside(path: str | Path, root: str | Path, real_folders: dict[str, str] | None = None) -> str | None:
    """Where a symbolic link takes `path` when `path` lies inside `root` as written but its real
    location (every link followed) is outside `root`'s real location; None otherwise.

    A path outside `root` as written (an absolute path in a YOLO list file) is the user's own
    configuration and not a link out of the dataset: None.

    `real_folders`, a dict a caller keeps for one pass over a dataset, remembers the real location of
    each folder (and of `root`): a file that is not itself a link then costs one lstat, not one per
    folder of its path.
    """
    absolute, base = os.path.abspath(path), os.path.abspath(root)
    if not _within(absolute, base):
        return None
    if real_folders is None:
        real, real_root = os.path.realpath(path), os.path.realpath(root)
    else:
        folder, name = os.path.split(absolute)
        for known in (folder, base):
            if known not in real_folders:
                real_folders[known] = os.path.realpath(known)
        real = os.path.realpath(absolute) if os.path.islink(absolute) else os.path.join(real_folders[folder], name)
        real_root = real_folders[base]
    return None if _within(real, real_root) else real


def report_outside_link(report: ImportReport, path: str | Path, target: str, root: str | Path) -> None:
    """Quarantine a file that is a symbolic link out of the dataset: reported (once), never read nor copied."""
    if os.path.abspath(path) in report.uncopied:
        return
    report.uncopied.add(os.path.abspath(path))
    report.add(path, "link leaves the dataset", f"symbolic link to {target}, outside the dataset folder {root}; "
               "not followed (nothing is read or copied from outside the dataset); copy the file into the "
               "dataset, or give the folder it lives in as the dataset")


def dataset_files(folder: Path, suffixes: set[str], report: ImportReport, root: Path | None = None,
                  recursive: bool = True) -> list[Path]:
    """Every file under `folder` with one of `suffixes` (any case), sorted, as paths under `folder`.

    Symbolic links that stay inside `root` (default `folder`) are followed, folders included, each
    real folder walked once (no loops). A link out of `root` is not followed: a linked file is
    quarantined (`report_outside_link`), a linked folder reported with none of its files read.
    """
    root = folder if root is None else root
    target = link_target_outside(folder, root)
    if target is not None:
        report.add(folder, "link leaves the dataset", f"symbolic link to the folder {target}, outside the dataset "
                   f"folder {root}; not followed, none of its files imported", quarantine=False)
        return []
    files, walked, real_folders = [], set(), {}
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in walked:  # a link back to a folder already walked
            subdirs[:] = []
            continue
        walked.add(real)
        kept = []
        for name in sorted(subdirs) if recursive else []:
            target = link_target_outside(Path(directory) / name, root)
            if target is None:
                kept.append(name)
            else:
                report.add(Path(directory) / name, "link leaves the dataset", f"symbolic link to the folder "
                           f"{target}, outside the dataset folder {root}; not followed, none of its files imported",
                           quarantine=False)
        subdirs[:] = kept
        for name in names:
            path = Path(directory) / name
            if path.suffix.lower() not in suffixes:
                continue
            target = link_target_outside(path, root, real_folders)
            if target is not None:
                report_outside_link(report, path, target, root)
            elif path.is_file():
                files.append(path)
    return sorted(files, key=lambda path: path.parts)  # the order of sorted(files), without Path comparisons


def image_files(folder: Path, report: ImportReport, root: Path | None = None) -> list[Path]:
    """Every image file under `folder` (by suffix, any case), sorted; see `dataset_files` for links."""
    return dataset_files(folder, IMAGE_SUFFIXES, report, root)


def add_unlabeled_images(dataset: ImportedDataset, report: ImportReport, seen: dict[str, Path],
                         paths: Sequence[Path], claimed: set[Path], split_of=lambda path: None) -> None:
    """Add every image of `paths` that no annotation file claimed as unlabeled (the pool to select from)."""
    for path in paths:
        if path.resolve() not in claimed:
            add_image(dataset, report, seen, path, split_of(path), None, None, [], labeled=False)
