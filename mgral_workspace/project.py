"""A project directory: images, visible labels, the oracle's hidden labels, and the pool table.

    project/project.yaml        class names, simulate flag, where the data came from
    project/images/<id>.<ext>   every image (non-RGB and 16-bit images converted to 8-bit RGB PNG)
    project/labels/<id>.txt     visible YOLO labels (val, test, labeled pool)
    project/oracle/labels/      simulation only: hidden labels, read by the annotate step alone
    project/pool.csv            pool state (mgral_workspace.pool)
    project/metadata.csv        optional per-image metadata (domain ...), for reports only
    project/quarantine/         rejected files and import_report.txt
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageOps

from mgral_core import __version__
from mgral_formats.common import ImportedDataset, ImportReport, exif_orientation
from mgral_formats.yolo import format_yolo_label, load_yolo
from mgral_workspace.atomic import write_directory_atomically
from mgral_workspace.pool import PoolState
from mgral_workspace.project_info import ProjectFileError, ProjectInfo, load_project_info  # noqa: F401 (here too)
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset


def _safe_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "image"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _copy_image(source: Path, target_stem: Path) -> Path:
    """Copy an upright 8-bit RGB image as is; store anything else (gray, RGBA, 16-bit, palette, or an EXIF
    orientation other than upright) as an upright RGB PNG, so every box lives in the frame annotators see.

    The file is read once, for the check and the copy."""
    data = source.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        if exif_orientation(image, data) != 1:
            target = target_stem.with_suffix(".png")
            ImageOps.exif_transpose(image).convert("RGB").save(target)
            return target
        if image.mode == "RGB" and source.suffix.lower() in (".png", ".jpg", ".jpeg"):
            target = target_stem.with_suffix(source.suffix.lower())
            target.write_bytes(data)
            return target
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            scale = 255.0 / max(1.0, array.max())
            image = Image.fromarray((array * scale).astype(np.uint8))
        target = target_stem.with_suffix(".png")
        image.convert("RGB").save(target)
        return target


def init_project(project_dir: str | Path, dataset: ImportedDataset, *, simulate: bool, initial_labeled: int,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                 metadata: pd.DataFrame | None = None, report: ImportReport | None = None,
                 created_from: str = "", min_eval_images: int = 10, eval_from_unlabeled: bool = False) -> Path:
    """Create a project from an imported dataset; atomic (built beside it, renamed at the end).

    Uses the dataset's own splits where present; otherwise carves val/test (see `_assign_splits`):
    out of the labeled images, or, in real use with too few labels to carve (none at all included)
    or with `eval_from_unlabeled`, out of the unlabeled images, to be labeled with the first batch.
    In simulation every pool image must be labeled; `initial_labeled` random ones stay visible and
    the rest go to the oracle. In real use labeled pool images form the initial set, which may be
    empty (a cold start: the first cycle selects without a trained detector).
    """
    project = Path(project_dir)
    if project.exists() and not project.is_dir():
        raise FileExistsError(f"{project}: exists and is not a folder")
    if project.exists() and any(project.iterdir()):
        raise FileExistsError(f"{project}: already exists and is not empty")
    if not dataset.images:
        raise ValueError("the dataset has no usable image (see the import report)")
    rng = np.random.default_rng(seed)
    splits, to_label = _assign_splits(dataset, val_fraction, test_fraction, rng, report, simulate=simulate,
                                      min_eval_images=min_eval_images, eval_from_unlabeled=eval_from_unlabeled)
    unlabeled_eval = [r.name for i, (r, s) in enumerate(zip(dataset.images, splits))
                      if s != "pool" and not r.labeled and i not in to_label]
    if unlabeled_eval:
        raise ValueError(f"val/test images must be labeled; unlabeled: {unlabeled_eval[:5]}")
    pool_rows = [i for i, s in enumerate(splits) if s == "pool"]
    if simulate:
        missing = [dataset.images[i].name for i in pool_rows if not dataset.images[i].labeled]
        if missing:
            raise ValueError(f"simulation needs every pool image labeled; unlabeled: {missing[:5]}")
        if initial_labeled > len(pool_rows):
            raise ValueError(f"initial_labeled={initial_labeled} exceeds the {len(pool_rows)} pool images")
        visible = set(rng.choice(pool_rows, size=initial_labeled, replace=False).tolist())
        if not visible:
            raise ValueError("no labeled pool image to start from")
    else:
        visible = {i for i in pool_rows if dataset.images[i].labeled}
        if not any(not dataset.images[i].labeled for i in pool_rows) and not visible:
            raise ValueError("no pool image left to label or to train on")

    return write_directory_atomically(project, lambda tmp: _write_project(
        tmp, dataset, splits, visible, simulate, metadata, report, created_from))


def _carved_from(labeled: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images each split gets when carved as `fractions` of `labeled` images (one labeled stays in the pool)."""
    sizes, left = {}, labeled
    for split, fraction in fractions.items():
        sizes[split] = min(max(1, int(round(fraction * labeled))), left - 1)
        left -= sizes[split]
    return sizes


def labeled_needed(fractions: dict[str, float], min_eval_images: int) -> int:
    """The fewest labeled images whose carve-out gives every split at least `min_eval_images`."""
    labeled = len(fractions) + 1
    while min(_carved_from(labeled, fractions).values()) < min_eval_images:
        labeled += 1
    return labeled


def _assign_splits(dataset: ImportedDataset, val_fraction: float, test_fraction: float,
                   rng: np.random.Generator, report: ImportReport | None = None, *, simulate: bool = True,
                   min_eval_images: int = 1, eval_from_unlabeled: bool = False) -> tuple[list[str], set[int]]:
    """Each image's split, and the rows of val/test images that are still to be labeled.

    The dataset's own splits where it has val and test. Else the missing splits are carved at
    random as fractions of the *labeled* images (unlabeled ones stay in the pool), keeping at least
    one labeled image in the pool; a carve-out under `min_eval_images` a split is noted with how many
    labels a meaningful one takes and how to label val/test with the first batch instead.

    In real use (not `simulate`) the splits are carved out of the *unlabeled* images instead when
    `eval_from_unlabeled` is set or there are too few labels to carve at all (no label included):
    `max(min_eval_images, fraction x all images)` each, at most half of the unlabeled images in all.
    They are returned as to label; the first cycle exports them with its batch. What was carved
    and why is added to the report's notes.

    Raises:
        ValueError: in simulation, fewer than 3 labeled images to carve from; in real use, too few
            unlabeled images to carve from and still leave a pool.
    """
    splits = [r.split or "" for r in dataset.images]
    if {"val", "test"} <= set(splits):
        return [s or "pool" for s in splits], set()
    notes = report.notes if report is not None else []
    free = [i for i, s in enumerate(splits) if s in ("", "pool") and dataset.images[i].labeled]
    wanted = {split: val_fraction if split == "val" else test_fraction for split in ("val", "test")
              if split not in splits}
    too_few = len(free) < len(wanted) + 1
    if simulate or not (too_few or eval_from_unlabeled):
        if too_few:
            raise ValueError(f"only {len(free)} labeled image(s) to carve {' and '.join(wanted)} from: a split needs "
                             f"at least 1 labeled image and the pool 1 more ({len(wanted) + 1} in all; 20 or more give "
                             "a usable mAP). Label more images, or give val/test folders of labeled images")
        sizes = _carved_from(len(free), wanted)
        free = list(rng.permutation(free))
        for split, n in sizes.items():
            for i in free[:n]:
                splits[i] = split
            free = free[n:]
        notes.append(f"carved {', '.join(f'{n} {s}' for s, n in sizes.items())} out of {len(free) + sum(sizes.values())} "
                     f"labeled images ({len(free)} labeled stay in the pool)")
        if not simulate and min(sizes.values()) < min_eval_images:
            notes.append(f"few labels: {' and '.join(f'{n} {s}' for s, n in sizes.items())} images are too few for a "
                         f"meaningful mAP (annotation.min_eval_images: {min_eval_images} each); carving them from "
                         f"labels takes {labeled_needed(wanted, min_eval_images)} labeled images, the dataset has "
                         f"{len(free) + sum(sizes.values())}. To label val/test with the first batch instead, create "
                         "the project with `mgral init --eval-in-first-batch` (annotation.eval_from_unlabeled: true)")
        return [s or "pool" for s in splits], set()
    unlabeled = [i for i, s in enumerate(splits) if s in ("", "pool") and not dataset.images[i].labeled]
    sizes = {split: max(min_eval_images, int(round(fraction * len(dataset.images)))) for split, fraction in wanted.items()}
    cap = len(unlabeled) // 2  # at least half of the unlabeled images stay in the pool to select from
    if cap < len(wanted):
        raise ValueError(f"only {len(unlabeled)} unlabeled image(s): too few to carve {' and '.join(wanted)} out of "
                         "and keep images to select from; add images, or give val/test folders of labeled images")
    if sum(sizes.values()) > cap:
        scale = cap / sum(sizes.values())
        sizes = {split: max(1, int(scale * n)) for split, n in sizes.items()}
    order = list(rng.permutation(unlabeled))
    to_label: set[int] = set()
    for split, n in sizes.items():
        for i in order[:n]:
            splits[i] = split
            to_label.add(int(i))
        order = order[n:]
    why = ("annotation.eval_from_unlabeled (--eval-in-first-batch)" if eval_from_unlabeled else
           f"only {len(free)} labeled image(s), too few to carve {' and '.join(wanted)} from")
    notes.append(f"{why}: carved {', '.join(f'{n} {s}' for s, n in sizes.items())} out of the {len(unlabeled)} "
                 "unlabeled images, to be labeled with the first batch (exported with it, marked as val/test); the "
                 "detector trains once they are labeled")
    if min(sizes.values()) < min_eval_images:
        notes.append(f"few images: {' and '.join(f'{n} {s}' for s, n in sizes.items())} are fewer than "
                     f"annotation.min_eval_images ({min_eval_images}) each, to leave half of the unlabeled images in "
                     "the pool; their mAP will be rough")
    return [s or "pool" for s in splits], to_label


def _write_project(root: Path, dataset: ImportedDataset, splits: list[str], visible: set[int], simulate: bool,
                   metadata: pd.DataFrame | None, report: ImportReport | None, created_from: str) -> None:
    for sub in ("images", "labels", "oracle/labels", "quarantine"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows, id_of_name, original_name = [], {}, _OriginalNames(dataset.root)
    for i, (record, split) in enumerate(zip(dataset.images, splits)):
        image_id = _safe_id(record.name, taken)
        id_of_name[record.name] = image_id
        image_file = _copy_image(record.source_path, root / "images" / image_id)
        text = format_yolo_label(record.boxes_xyxy, record.classes, record.width, record.height)
        labeled = record.labeled and (split != "pool" or i in visible)
        label_file = ""
        if labeled:
            (root / "labels" / f"{image_id}.txt").write_text(text)
            label_file = f"labels/{image_id}.txt"
        elif record.labeled and simulate:
            (root / "oracle" / "labels" / f"{image_id}.txt").write_text(text)
        rows.append({"image_id": image_id, "file": f"images/{image_file.name}", "split": split,
                     "labeled": labeled, "selected_cycle": 0 if labeled and split == "pool" else -1,
                     "labeled_cycle": 0 if labeled and split == "pool" else -1, "label_file": label_file,
                     "width": record.width, "height": record.height,
                     "original_name": record.original_name or original_name(record.source_path)})
    PoolState.new(rows).save(root)
    if metadata is not None:
        meta = metadata[metadata["image_id"].isin(id_of_name)].copy()
        meta["image_id"] = meta["image_id"].map(id_of_name)
        meta.to_csv(root / "metadata.csv", index=False)
    if report is not None:
        for source in report.quarantined:  # never a link out of the dataset: its target is not the user's to copy
            if os.path.abspath(source) not in report.uncopied and Path(source).is_file():
                shutil.copyfile(source, root / "quarantine" / Path(source).name)
        (root / "quarantine" / "import_report.txt").write_text(report.to_text() + "\n")
    info = {"class_names": list(dataset.class_names), "simulate": simulate, "created_from": created_from,
            "mgral_version": __version__, "images": len(rows),
            "splits": {s: splits.count(s) for s in ("pool", "val", "test")}}
    (root / "project.yaml").write_text(yaml.safe_dump(info, sort_keys=False))


class _OriginalNames:
    """What exports may call each image: its path relative to the dataset folder `root` (POSIX), else its
    file name. Relative to `root` as given, else with links in the folders resolved (a reader may resolve
    its paths); `root` is resolved once, an image's folder only when the first way fails."""

    def __init__(self, root: Path | None):
        self.bases = None if root is None else (Path(root).absolute(), Path(root).resolve())

    def __call__(self, source: Path) -> str:
        source = Path(source)
        if self.bases is not None:
            given, real = self.bases
            path = source.absolute()
            inside = _below(path, given) or _below(path.parent.resolve() / source.name, real)
            if inside:
                return inside
        return source.name


def _below(path: Path, base: Path) -> str | None:
    """`path` relative to `base` (POSIX) when it lies below it, else None."""
    try:
        inside = path.relative_to(base)
    except ValueError:
        return None
    return inside.as_posix() if inside.parts else None


def init_from_synthetic(project_dir: str | Path, spec: SyntheticSpec, initial_labeled: int, seed: int = 0) -> Path:
    """Generate the built-in dataset and make a simulation project of it."""
    project = Path(project_dir)
    with tempfile.TemporaryDirectory(prefix=".mgral-gen-", dir=project.parent if project.parent.exists() else None) as tmp:
        data_dir = generate_dataset(spec, Path(tmp) / "data")
        dataset, report = load_yolo(data_dir)
        metadata = pd.read_csv(data_dir / "metadata.csv", dtype={"image_id": str}, keep_default_na=False)
        return init_project(project, dataset, simulate=True, initial_labeled=initial_labeled, seed=seed,
                            metadata=metadata, report=report, created_from=f"builtin:{spec}")
