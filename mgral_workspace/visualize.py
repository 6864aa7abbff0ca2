"""Image grids with boxes drawn (README samples, contact sheets of selected batches)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40)]


def draw_boxes(image: np.ndarray, boxes_xyxy: np.ndarray, classes: np.ndarray, names: Sequence[str],
               scale: float = 1.0) -> np.ndarray:
    """A copy of a BGR image with each box and class name drawn (cv2's built-in font, no download)."""
    out = image.copy()
    for (x1, y1, x2, y2), cls in zip(np.asarray(boxes_xyxy) * scale, np.asarray(classes)):
        colour = PALETTE[int(cls) % len(PALETTE)][::-1]
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1)
        cv2.putText(out, names[int(cls)], (int(x1), max(8, int(y1) - 2)), cv2.FONT_HERSHEY_PLAIN, 0.7, colour, 1)
    return out


def render_grid(items: Sequence[tuple[Path, np.ndarray, np.ndarray, str]], names: Sequence[str], out_png: str | Path,
                cols: int = 8, tile: int = 192) -> Path:
    """Save a grid of (image path, boxes_xyxy, classes, caption) tiles to out_png."""
    rows = -(-len(items) // cols)
    canvas = np.full((rows * (tile + 14), cols * tile, 3), 255, np.uint8)
    for i, (path, boxes, classes, caption) in enumerate(items):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        scale = tile / max(image.shape[:2])
        image = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
        tile_image = draw_boxes(image, boxes, classes, names, scale)
        r, c = divmod(i, cols)
        y, x = r * (tile + 14), c * tile
        canvas[y:y + tile_image.shape[0], x:x + tile_image.shape[1]] = tile_image
        cv2.putText(canvas, caption, (x + 2, y + tile + 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), canvas)
    return out_png
