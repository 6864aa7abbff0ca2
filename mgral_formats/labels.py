"""YOLO txt label files (`cls cx cy w h`, normalized) to and from pixel boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mgral_workspace.atomic import write_text_atomic


class LabelFileError(ValueError):
    """A label file has a malformed line; the message names the file and line."""


def read_yolo_label(path: str | Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (boxes_xyxy (N, 4) float32 pixels, classes (N,) int64); a missing file is an error."""
    path = Path(path)
    boxes, classes = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise LabelFileError(f"{path}:{number}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise LabelFileError(f"{path}:{number}: non-numeric value in {line.strip()!r}") from None
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        classes.append(cls)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def format_yolo_label(boxes_xyxy: np.ndarray, classes: np.ndarray, width: int, height: int) -> str:
    lines = []
    for (x1, y1, x2, y2), cls in zip(np.asarray(boxes_xyxy, float), np.asarray(classes)):
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yolo_label(path: str | Path, boxes_xyxy: np.ndarray, classes: np.ndarray, width: int, height: int) -> None:
    write_text_atomic(path, format_yolo_label(boxes_xyxy, classes, width, height))
