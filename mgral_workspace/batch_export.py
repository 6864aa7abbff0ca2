"""Export a selected batch for annotators: every format in mgral_formats.EXPORTERS, a path list, a contact sheet.

Everything goes into `project/exports/cycle_NNN/`, written into a temporary folder and renamed,
so an export is either complete or absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from mgral_core.detections import Detections
from mgral_formats import EXPORTERS
from mgral_formats.common import BatchImage, ExportBatch
from mgral_workspace.atomic import make_temp_dir
from mgral_workspace.pool import PoolState
from mgral_workspace.visualize import render_grid


def export_batch(project_dir: str | Path, cycle: int, ids: Sequence[str], detections: dict[str, Detections],
                 class_names: Sequence[str], model_version: str, prelabel_conf: float = 0.25) -> Path:
    """Write every export format for the batch `ids`; returns exports/cycle_NNN.

    Val/test images among `ids` (carved out of the unlabeled images, to be labeled with this batch)
    are marked as such: `splits.csv`, `mgral_split` in the COCO images, and the README.
    """
    project = Path(project_dir).resolve()
    table = PoolState.load(project).table
    rows = dict(zip(table["image_id"].to_numpy(dtype=object),  # id -> (file, width, height, split), once
                    zip(table["file"].to_numpy(dtype=object), table["width"].to_numpy().tolist(),
                        table["height"].to_numpy().tolist(), table["split"].to_numpy(dtype=object))))
    out = project / "exports" / f"cycle_{cycle:03d}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(f".{out.name}.", out.parent)
    try:
        images, sheet = [], []
        for image_id in ids:
            det, (file, width, height, split) = detections[image_id], rows[image_id]
            keep = det.scores >= prelabel_conf
            kept = Detections(det.boxes_xyxy[keep], det.scores[keep], det.classes[keep])
            images.append(BatchImage(image_id, file, width, height, kept, split))
            sheet.append((project / file, kept.boxes_xyxy, kept.classes, image_id))
        batch = ExportBatch(images, class_names, model_version)
        for write in EXPORTERS.values():
            write(batch, tmp)
        (tmp / "images.txt").write_text("".join(f"{project / rows[i][0]}\n" for i in ids))
        (tmp / "splits.csv").write_text("image_id,split\n" + "".join(f"{i},{rows[i][3]}\n" for i in ids))
        render_grid(sheet, class_names, tmp / "contact_sheet.png", cols=10, tile=160)
        evaluation = {split: sum(rows[i][3] == split for i in ids) for split in ("val", "test")}
        (tmp / "README.txt").write_text(_instructions(project, cycle, len(ids), evaluation))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _instructions(project: Path, cycle: int, n: int, evaluation: dict[str, int]) -> str:
    marked = ""
    if any(evaluation.values()):
        marked = (f"{evaluation['val']} of them are validation and {evaluation['test']} test images (splits.csv; "
                  "mgral_split in coco_images.json): label them like the others. They measure the detector and are "
                  "never trained on; the detector trains once enough of this batch is labeled.\n\n")
    return (f"MGRAL batch for cycle {cycle}: {n} images to label.\n\n{marked}"
            "Label Studio: create a project with label_studio_config.xml, import label_studio_tasks.json\n"
            "(pre-annotations included). Images are referenced as local files: start Label Studio with\n"
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={project}\n"
            "CVAT and other tools: images.txt lists the image paths, yolo_prelabels/ holds YOLO pre-labels,\n"
            "coco_images.json + coco_predictions.json are COCO.\n\n"
            f"When done, export (Label Studio JSON, COCO JSON or a YOLO label folder) and run\n"
            f"  mgral import {project} EXPORTED_FILE_OR_DIR\n"
            f"or drop the export into {project / 'inbox'} and the next cycle imports it.\n")
