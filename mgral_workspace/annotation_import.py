"""Import finished annotations (Label Studio JSON or JSON-MIN, COCO JSON, a YOLO label folder or YOLO
export with classes.txt) into a project.

Everything is validated before anything changes. If any problem is found nothing is merged and
every problem is reported by file/task. Otherwise label files are written and then the pool
table is replaced atomically (the commit point): all of the import or none of it. An import that
matches no image is refused too. Reading the files is mgral_formats' job; this module matches
them to the project's images, checks them and merges.

Images are matched by the project's id (`mgral_id` in a task's data), by their path in the project,
or by their original name (the path in the dataset the project was made from, or its file name; for
an image stored elsewhere, such as a Label Studio upload or an s3/gs/https URL, its file name
without the upload prefix). A name that fits two project images is refused, naming both.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mgral_formats import read_annotations
from mgral_formats.common import UPLOAD_PREFIX, AnnotationEntry, FormatError, strip_upload_prefix
from mgral_formats.yolo import format_yolo_label, read_yolo_label
from mgral_workspace.atomic import write_texts_atomic
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info

ASPECT_TOLERANCE = 0.02  # relative difference of width/height ratios still taken as the same picture
EXAMPLES = 3  # how many examples a summary note names


class AnnotationImportError(ValueError):
    """The import was refused; `problems` lists each one and nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__("import refused, nothing changed:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # already imported with the same labels
    replaced: list[str] = field(default_factory=list)  # labeled before, relabeled with --replace
    notes: list[str] = field(default_factory=list)  # how images were matched, tasks left pending, backups
    warnings: list[str] = field(default_factory=list)  # rules applied: which annotation won, results ignored
    cycle: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.imported or self.replaced)


def _name_problem(name: str) -> str | None:
    if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
        return f"file name {name!r} tries to leave the project (absolute path or '..')"
    return None


def _name_and_stem(path: str) -> tuple[str, str]:
    """`PurePosixPath(path).name` and `.stem` from the string itself (built for every image of a project:
    the path objects cost more than the whole rest of the index)."""
    name = next((part for part in reversed(path.split("/")) if part and part != "."), "")
    dot = name.rfind(".")
    return name, name[:dot] if 0 < dot < len(name) - 1 else name


class _ImageIndex:
    """The project's images by every name an export may use: id, project file, original path and file name."""

    def __init__(self, table: pd.DataFrame):
        ids = table.index.to_numpy(dtype=object)
        self.ids = set(ids)
        self.by_file = dict(zip(table["file"].to_numpy(dtype=object), ids))
        self.original = {i: o for i, o in zip(ids, table["original_name"].to_numpy(dtype=object)) if o}
        self.names: dict[str, dict[str, str]] = defaultdict(dict)  # a file name or stem -> {id: how}
        for file, image_id in self.by_file.items():
            self.names[_name_and_stem(file)[0]][image_id] = "its project file name"
            self.names[image_id].setdefault(image_id, "its id")
        for image_id, original in self.original.items():
            for key in (original, *_name_and_stem(original)):
                self.names[key].setdefault(image_id, f"its original name {original!r}")

    def find(self, entry: AnnotationEntry) -> tuple[str | None, str | None, str]:
        """(image id, None, how it matched) or (None, problem, "")."""
        if entry.mgral_id:
            bad = _name_problem(entry.mgral_id)
            if bad:
                return None, bad, ""
            if entry.mgral_id in self.ids:
                return entry.mgral_id, None, "mgral_id"
            return None, f"image {entry.mgral_id!r} is not in the project", ""
        remote = entry.file_name is not None
        given = entry.file_name if remote else entry.name
        if not remote:
            bad = _name_problem(given)
            if bad:
                return None, bad, ""
            if given in self.by_file:  # the image's path in the project, as the batch export writes it
                return self.by_file[given], None, "project file"
        candidates = self._candidates(given)
        how_prefix = ""
        base = PurePosixPath(given).name
        if not candidates and UPLOAD_PREFIX.match(base):
            candidates = self._candidates(strip_upload_prefix(base))
            how_prefix = "Label Studio's upload prefix removed, "
        where = f"{given!r}" + (f" (from a {entry.reference}: {entry.name!r})" if remote else "")
        if not candidates:
            return None, f"image {given!r} is not in the project" if not remote else \
                f"image {where} is not in the project: no image has that original file name", ""
        if len(candidates) > 1:
            listed = ", ".join(f"{i} (by {how})" for i, how in sorted(candidates.items()))
            return None, (f"image {where} is ambiguous: it fits {len(candidates)} project images, {listed}; "
                          "give the project's mgral_id in the task data (or a unique name)"), ""
        (image_id, how), = candidates.items()
        via = f" from a {entry.reference}" if remote else ""
        return image_id, None, f"{how_prefix}{how.replace('its ', '')}{via}"

    def _candidates(self, given: str) -> dict[str, str]:
        """Every image `given` could mean, by the longest tail of its path that names any: an id, a project
        file name, an original path, file name or stem. An id that is also another image's original
        name gives both (`a b.png` and `a_b.png` become ids a_b and a_b_2: `a_b.txt` fits both)."""
        parts = PurePosixPath(given).parts
        found: dict[str, str] = {}
        for n in range(len(parts)):
            for image_id, how in self.names.get(PurePosixPath(*parts[n:]).as_posix(), {}).items():
                found.setdefault(image_id, how)
            if found:
                break
        return found


def import_annotations(project_dir: str | Path, source: str | Path, *, replace: bool = False,
                       keep_replaced: Path | None = None) -> ImportSummary:
    """Validate `source` against the project's open batches and merge it; raises AnnotationImportError.

    Images already labeled are left alone when the labels are the same; with different labels the
    import is refused unless `replace` (a deliberate relabel). Replaced label files are copied into
    `keep_replaced` when given (for projects whose history is not versioned). Nothing is committed
    to git/DVC here: the caller versions the pool while it still holds the project lock.
    """
    project = Path(project_dir)
    info = load_project_info(project)
    pool = PoolState.load(project)
    table = pool.table.set_index("image_id")
    index = _ImageIndex(table)
    ids = table.index.to_numpy(dtype=object)
    size = dict(zip(ids, zip(table["width"].to_numpy().tolist(), table["height"].to_numpy().tolist())))
    label_file = {i: f for i, f, labeled in zip(ids, table["label_file"].to_numpy(dtype=object), table["labeled"].to_numpy())
                  if labeled}  # the labeled images' label files
    pending = set(pool.pending_ids())
    problems, accepted, replaced, unchanged, seen = [], {}, {}, [], {}
    notes: list[str] = []
    warnings: list[str] = []
    matched: dict[str, list[str]] = defaultdict(list)
    waiting: dict[str, list[str]] = defaultdict(list)
    try:
        found = read_annotations(source)
    except FormatError as err:
        raise AnnotationImportError([str(err)]) from None
    if found.class_names is not None:
        unknown = [n for n in found.class_names if n not in info.class_names]
        if unknown:
            problems.append(f"{found.class_names_file}: class names {unknown} are not the project's classes "
                            f"{list(info.class_names)}; label with the project's classes (label_studio_config.xml "
                            "of the batch export)")
    for entry in found.entries:
        if entry.problem:
            problems.append(f"{entry.where}: {entry.problem}")
            continue
        warnings += entry.notes
        if entry.pending:
            waiting[entry.pending].append(entry.where)
            continue
        image_id, problem, how = index.find(entry)
        if image_id is None:
            problems.append(f"{entry.where}: {problem}")
            continue
        if image_id in seen:
            problems.append(f"{entry.where}: duplicate annotation for {image_id} (also in {seen[image_id]})")
            continue
        seen[image_id] = entry.where
        if how not in ("id", "project file"):
            matched[how].append(f"{entry.where} -> {image_id}")
        width, height = size[image_id]
        size_problem = _size_problem(entry, image_id, width, height)
        if size_problem:
            problems.append(f"{entry.where}: {size_problem}")
            continue
        converted = _convert(entry, info.class_names, width, height, problems)
        if converted is None:
            continue
        if image_id in label_file:
            current = _current_labels(project / label_file[image_id], width, height)
            if current is not None and _same(current, converted):
                unchanged.append(image_id)
            elif replace:
                replaced[image_id] = converted
            else:
                problems.append(f"{entry.where}: {image_id} is already labeled (with different labels); to relabel "
                                "it, import again with --replace (the current labels stay in the project's history)")
            continue
        if image_id not in pending:
            problems.append(f"{entry.where}: {image_id} is not in an open batch (not selected for labeling)")
            continue
        accepted[image_id] = converted
    if not problems and not (accepted or replaced or unchanged):
        problems.append(f"{Path(source).name}: nothing to import, no annotated image"
                        + (": " + "; ".join(f"{len(w)} task(s) with {why}" for why, w in waiting.items()) +
                           " (finish them and export again)" if waiting else ""))
    if problems:
        raise AnnotationImportError(problems)
    for how, examples in matched.items():
        notes.append(f"matched {len(examples)} image(s) by {how}: {', '.join(examples[:EXAMPLES])}"
                     + (", ..." if len(examples) > EXAMPLES else ""))
    for why, where in waiting.items():
        notes.append(f"{len(where)} task(s) with {why} left as they are: {', '.join(where[:EXAMPLES])}"
                     + (", ..." if len(where) > EXAMPLES else ""))
    cycle = int(table.loc[list(accepted), "selected_cycle"].max()) if accepted else pool.current_cycle
    if replaced and keep_replaced is not None:
        keep_replaced.mkdir(parents=True, exist_ok=True)
        for image_id in replaced:
            old = project / label_file[image_id]
            if old.is_file():
                shutil.copyfile(old, keep_replaced / f"{image_id}.txt")
        notes.append(f"the {len(replaced)} replaced label file(s) were kept in {keep_replaced}")
    texts = {project / label_file[image_id]: format_yolo_label(boxes, classes, *size[image_id])
             for image_id, (boxes, classes) in replaced.items()}
    label_files = {}
    for image_id, (boxes, classes) in accepted.items():
        texts[info.labels_dir / f"{image_id}.txt"] = format_yolo_label(boxes, classes, *size[image_id])
        label_files[image_id] = f"labels/{image_id}.txt"
    write_texts_atomic(texts)
    if label_files:
        updated = pool
        cycles = table.loc[list(label_files), "selected_cycle"]
        for batch_cycle in sorted(set(cycles)):
            ids = cycles.index[cycles == batch_cycle]
            updated = updated.mark_labeled({i: label_files[i] for i in ids}, int(batch_cycle))
        updated.save(project)
    return ImportSummary(sorted(label_files), sorted(unchanged), sorted(replaced), notes, warnings, cycle)


def _size_problem(entry: AnnotationEntry, image_id: str, width: int, height: int) -> str | None:
    """The annotated image's size (when the export gives it) must be the project image's: the same shape
    for relative coordinates, the same pixels for pixel coordinates."""
    if entry.annotated_size is None:
        return None
    aw, ah = entry.annotated_size
    same = (abs(aw / ah - width / height) <= ASPECT_TOLERANCE * width / height if entry.normalized
            else abs(aw - width) <= 0.5 and abs(ah - height) <= 0.5)
    if same:
        return None
    return (f"annotated on a {aw:g}x{ah:g} image, but the project's image {image_id} is {width}x{height}: another "
            "image, or one shown turned (EXIF orientation); its boxes would land in the wrong place")


def _current_labels(path: Path, width: int, height: int):
    """The image's current labels, or None when its label file is missing or unreadable (then it differs)."""
    try:
        return read_yolo_label(path, width, height)
    except (OSError, FormatError):
        return None


def _convert(entry: AnnotationEntry, class_names, width: int, height: int, problems: list[str]):
    boxes, classes = [], []
    for i, (box, cls) in enumerate(zip(entry.boxes, entry.classes)):
        where = f"{entry.where} box {i}"
        if isinstance(cls, str) and cls.startswith("<"):
            problems.append(f"{where}: {cls[1:-1]}")
            return None
        if isinstance(cls, str):
            if cls not in class_names:
                problems.append(f"{where}: unknown class name {cls!r}; project classes: {list(class_names)}")
                return None
            cls = class_names.index(cls)
        elif not 0 <= int(cls) < len(class_names):
            problems.append(f"{where}: class id {cls} not in 0..{len(class_names) - 1}")
            return None
        if entry.normalized:
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
    """Import every file or folder waiting in project/inbox, each on its own.

    An imported one moves to inbox/done/ (under a new name if that name is taken). One that cannot
    be imported (unreadable, malformed, refused) stays where it is and its reason is returned; the
    others are imported all the same.
    """
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
        except (OSError, ValueError) as err:  # anything a reader did not foresee still stays with its file
            errors.append(f"{item.name}: cannot be imported ({type(err).__name__}: {err})")
            continue
        total.imported += summary.imported
        total.unchanged += summary.unchanged
        total.notes += [f"{item.name}: {note}" for note in summary.notes]
        total.warnings += [f"{item.name}: {warning}" for warning in summary.warnings]
        (inbox / "done").mkdir(exist_ok=True)
        item.rename(_free_name(inbox / "done" / item.name))
    return total, errors


def _free_name(path: Path) -> Path:
    """`path`, or `name_2.ext`, `name_3.ext` ... : a name in its folder that nothing holds yet."""
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate
