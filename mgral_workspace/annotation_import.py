"""Import finished annotations (Label Studio JSON export, COCO JSON, YOLO label folder) into a project.

Everything is validated before anything changes. If any problem is found nothing is merged and
every problem is reported by file/task. Otherwise label files are written and then the pool
table is replaced atomically (the commit point): all of the import or none of it. Reading the
files is mgral_formats' job; this module checks them against the project and merges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from mgral_formats import read_annotations
from mgral_formats.common import AnnotationEntry, FormatError
from mgral_formats.yolo import format_yolo_label, read_yolo_label
from mgral_workspace.atomic import write_text_atomic
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info


class AnnotationImportError(ValueError):
    """The import was refused; `problems` lists each one and nothing was changed."""

    def __init__(self, problems: list[str]):
        super().__init__("import refused, nothing changed:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # already imported with the same labels
    cycle: int = 0


def _name_problem(name: str) -> str | None:
    if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
        return f"file name {name!r} tries to leave the project (absolute path or '..')"
    return None


def import_annotations(project_dir: str | Path, source: str | Path) -> ImportSummary:
    """Validate `source` against the project's open batches and merge it; raises AnnotationImportError."""
    project = Path(project_dir)
    info = load_project_info(project)
    pool = PoolState.load(project)
    table = pool.table.set_index("image_id")
    by_file = {Path(f).name: i for i, f in zip(table.index, table["file"])}
    pending, labeled = set(pool.pending_ids()), set(pool.labeled_pool_ids)
    problems, accepted, unchanged, seen = [], {}, [], {}
    try:
        entries = read_annotations(source)
    except FormatError as err:
        raise AnnotationImportError([str(err)]) from None
    for entry in entries:
        if entry.problem:
            problems.append(f"{entry.where}: {entry.problem}")
            continue
        bad_name = _name_problem(entry.name)
        if bad_name:
            problems.append(f"{entry.where}: {bad_name}")
            continue
        image_id = entry.name if entry.name in table.index else by_file.get(PurePosixPath(entry.name).name)
        if image_id is None:
            problems.append(f"{entry.where}: image {entry.name!r} is not in the project")
            continue
        if image_id in seen:
            problems.append(f"{entry.where}: duplicate annotation for {image_id} (also in {seen[image_id]})")
            continue
        seen[image_id] = entry.where
        width, height = int(table.loc[image_id, "width"]), int(table.loc[image_id, "height"])
        converted = _convert(entry, info.class_names, width, height, problems)
        if converted is None:
            continue
        if image_id in labeled:
            current = read_yolo_label(project / table.loc[image_id, "label_file"], width, height)
            if _same(current, converted):
                unchanged.append(image_id)
            else:
                problems.append(f"{entry.where}: {image_id} is already labeled (with different labels)")
            continue
        if image_id not in pending:
            problems.append(f"{entry.where}: {image_id} is not in an open batch (not selected for labeling)")
            continue
        accepted[image_id] = converted
    if problems:
        raise AnnotationImportError(problems)
    cycle = int(table.loc[list(accepted), "selected_cycle"].max()) if accepted else pool.current_cycle
    label_files = {}
    for image_id, (boxes, classes) in accepted.items():
        width, height = int(table.loc[image_id, "width"]), int(table.loc[image_id, "height"])
        write_text_atomic(info.labels_dir / f"{image_id}.txt", format_yolo_label(boxes, classes, width, height))
        label_files[image_id] = f"labels/{image_id}.txt"
    if label_files:
        updated = pool
        cycles = table.loc[list(label_files), "selected_cycle"]
        for batch_cycle in sorted(set(cycles)):
            ids = cycles.index[cycles == batch_cycle]
            updated = updated.mark_labeled({i: label_files[i] for i in ids}, int(batch_cycle))
        updated.save(project)
    return ImportSummary(sorted(label_files), sorted(unchanged), cycle)


def _convert(entry: AnnotationEntry, class_names, width: int, height: int, problems: list[str]):
    boxes, classes = [], []
    for i, (box, cls) in enumerate(zip(entry.boxes, entry.classes)):
        where = f"{entry.where} box {i}"
        if isinstance(cls, str) and cls.startswith("<"):
            problems.append(f"{where}: {cls.strip('<>')}")
            return None
        if isinstance(cls, str):
            if cls not in class_names:
                problems.append(f"{where}: unknown class name {cls!r}; project classes: {list(class_names)}")
                return None
            cls = class_names.index(cls)
        elif not 0 <= int(cls) < len(class_names):
            problems.append(f"{where}: class id {cls} not in 0..{len(class_names) - 1}")
            return None
        if len(box) == 6:  # Label Studio percent box with its own original size
            x, y, w, h, ow, oh = box
            box = [x / 100 * width, y / 100 * height, (x + w) / 100 * width, (y + h) / 100 * height]
        elif entry.normalized:
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
    """Import every file or YOLO folder waiting in project/inbox; successfully imported ones move to inbox/done."""
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
        total.imported += summary.imported
        total.unchanged += summary.unchanged
        (inbox / "done").mkdir(exist_ok=True)
        item.rename(inbox / "done" / item.name)
    return total, errors
