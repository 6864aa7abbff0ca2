"""Export a selected batch for annotators: Label Studio, COCO, YOLO pre-labels, a path list, a contact sheet.

Everything goes into `project/exports/cycle_NNN/`, written into a temporary folder and renamed,
so an export is either complete or absent.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from mgral_core.detections import Detections
from mgral_formats.labels import format_yolo_label
from mgral_workspace.pool import PoolState
from mgral_workspace.visualize import render_grid

FROM_NAME, TO_NAME = "label", "image"


def label_studio_config(class_names: Sequence[str]) -> str:
    """RectangleLabels labeling config with the project's classes."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n</View>\n')


def label_studio_task(image_id: str, rel_file: str, width: int, height: int, det: Detections,
                      class_names: Sequence[str], model_version: str) -> dict:
    """One task whose pre-annotation is the detector's boxes (percent coordinates, as Label Studio wants)."""
    result = []
    for (x1, y1, x2, y2), cls, score in zip(det.boxes_xyxy.tolist(), det.classes.tolist(), det.scores.tolist()):
        result.append({
            "id": f"{image_id}_{len(result)}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0, "score": round(score, 4),
            "value": {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width,
                      "height": 100 * (y2 - y1) / height, "rotation": 0, "rectanglelabels": [class_names[cls]]},
        })
    mean_score = float(det.scores.mean()) if len(det) else 0.0
    return {"data": {"image": f"/data/local-files/?d={rel_file}", "mgral_id": image_id},
            "predictions": [{"model_version": model_version, "score": round(mean_score, 4), "result": result}]}


def export_batch(project_dir: str | Path, cycle: int, ids: Sequence[str], detections: dict[str, Detections],
                 class_names: Sequence[str], model_version: str, prelabel_conf: float = 0.25) -> Path:
    """Write every export format for the batch `ids`; returns exports/cycle_NNN."""
    project = Path(project_dir).resolve()
    pool = PoolState.load(project)
    table = pool.table.set_index("image_id")
    out = project / "exports" / f"cycle_{cycle:03d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else
                                _mkdir(out.parent)))
    try:
        kept = {}
        for image_id in ids:
            det = detections[image_id]
            keep = det.scores >= prelabel_conf
            kept[image_id] = Detections(det.boxes_xyxy[keep], det.scores[keep], det.classes[keep])
        tasks, coco_images, coco_predictions, sheet = [], [], [], []
        (tmp / "yolo_prelabels").mkdir()
        for number, image_id in enumerate(ids, start=1):
            row, det = table.loc[image_id], kept[image_id]
            width, height = int(row["width"]), int(row["height"])
            tasks.append(label_studio_task(image_id, row["file"], width, height, det, class_names, model_version))
            coco_images.append({"id": number, "file_name": row["file"], "width": width, "height": height,
                                "mgral_id": image_id})
            for (x1, y1, x2, y2), cls, score in zip(det.boxes_xyxy.tolist(), det.classes.tolist(), det.scores.tolist()):
                coco_predictions.append({"image_id": number, "category_id": int(cls) + 1, "score": round(score, 4),
                                         "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]})
            (tmp / "yolo_prelabels" / f"{image_id}.txt").write_text(
                format_yolo_label(det.boxes_xyxy, det.classes, width, height))
            sheet.append((project / row["file"], det.boxes_xyxy, det.classes, image_id))
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
        (tmp / "label_studio_tasks.json").write_text(json.dumps(tasks, indent=1))
        (tmp / "label_studio_config.xml").write_text(label_studio_config(class_names))
        (tmp / "coco_images.json").write_text(json.dumps({"images": coco_images, "annotations": [],
                                                          "categories": categories}, indent=1))
        (tmp / "coco_predictions.json").write_text(json.dumps(coco_predictions))
        (tmp / "images.txt").write_text("".join(f"{project / table.loc[i, 'file']}\n" for i in ids))
        render_grid(sheet, class_names, tmp / "contact_sheet.png", cols=10, tile=160)
        (tmp / "README.txt").write_text(_instructions(project, cycle, len(ids)))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _instructions(project: Path, cycle: int, n: int) -> str:
    return (f"MGRAL batch for cycle {cycle}: {n} images to label.\n\n"
            "Label Studio: create a project with label_studio_config.xml, import label_studio_tasks.json\n"
            "(pre-annotations included). Images are referenced as local files: start Label Studio with\n"
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={project}\n"
            "CVAT and other tools: images.txt lists the image paths, yolo_prelabels/ holds YOLO pre-labels,\n"
            "coco_images.json + coco_predictions.json are COCO.\n\n"
            f"When done, export (Label Studio JSON, COCO JSON or a YOLO label folder) and run\n"
            f"  mgral import {project} EXPORTED_FILE_OR_DIR\n"
            f"or drop the export into {project / 'inbox'} and the next cycle imports it.\n")
