"""The pretraining set: generated objects that the built-in dataset does NOT have, on varied backgrounds.

`mgral pretrain` trains YOLOv8n on this set, then ships its backbone and neck as the detector's
pretrained start (docs/method.md, "A pretrained start made here"). It must be disjoint from the
built-in dataset (mgral_workspace.synthetic): other classes and other shapes (ellipses, arrows,
crescents, hearts, trapezoids, textured blobs and letters/digits drawn with Pillow's built-in
font), on backgrounds the built-in set never uses (multi-octave noise, stripes, checkerboards,
grain), with varied scale, contrast, blur and noise. tests/workspace/test_pretrain_data.py checks
the disjointness.

Deterministic from a seed (same seed, byte-identical files). Layout: images/{train,val}/<id>.png,
labels/{train,val}/<id>.txt (YOLO), data.yaml, spec.json (the PretrainSpec that made it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont

from mgral_formats.yolo import format_yolo_label
from mgral_workspace.atomic import write_directory_atomically

SHAPE_CLASSES = ("ellipse", "pentagon", "arrow", "crescent", "heart", "trapezoid", "blob")
GLYPHS = ("A", "E", "K", "R", "3", "7", "Z")  # no O/0 (ring-like), X/+ (cross-like), no triangle-like glyphs
PRETRAIN_CLASSES = SHAPE_CLASSES + tuple(f"glyph_{g}" for g in GLYPHS)
BACKGROUNDS = ("noise", "stripes", "checker", "grain", "flat")


@dataclass(frozen=True)
class PretrainSpec:
    """What to generate.

    Attributes:
        seed: every random choice derives from it.
        image_size: square image side.
        n_train / n_val: images per split.
        max_objects: objects per image are 1..max_objects (a few images are empty, see empty_fraction).
        min_size / max_size: object size range in pixels at image_size 160 (scaled with image_size).
        empty_fraction: share of images with no object.
    """

    seed: int = 0
    image_size: int = 160
    n_train: int = 2000
    n_val: int = 200
    max_objects: int = 8
    min_size: int = 8
    max_size: int = 72
    empty_fraction: float = 0.03

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_val) < 1:
            raise ValueError("n_train and n_val must each be at least 1")
        if not 0 < self.min_size <= self.max_size:
            raise ValueError("need 0 < min_size <= max_size")
        if self.image_size < 32:
            raise ValueError("image_size must be at least 32")


def _smooth_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S) float noise in [0, 1] from a few octaves of upsampled random grids."""
    out = np.zeros((size, size))
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)):
        grid = rng.random((cells, cells))
        out += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    out -= out.min()
    return out / max(out.max(), 1e-9)


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 background of one of BACKGROUNDS, in random colours."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if kind == "noise":
        t = _smooth_noise(size, rng)
    elif kind == "stripes":
        yy, xx = np.mgrid[0:size, 0:size]
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 30)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    elif kind == "checker":
        cell = int(rng.integers(6, 40))
        yy, xx = np.mgrid[0:size, 0:size] // cell
        t = ((yy + xx) % 2).astype(float)
        t = cv2.GaussianBlur(t, (0, 0), 0.8)
    elif kind == "grain":
        t = np.clip(rng.normal(0.5, 0.25, (size, size)), 0, 1)
    else:
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = np.clip(0.5 + rng.uniform(-0.5, 0.5) * xx + rng.uniform(-0.5, 0.5) * yy, 0, 1)
    contrast = rng.uniform(0.15, 1.0)
    mix = (0.5 + (t - 0.5) * contrast)[..., None]
    return np.clip(c1 * (1 - mix) + c2 * mix, 0, 255).astype(np.uint8)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _shape_polygon(name: str, r: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Polygon (P, 2) centred on 0 with radius about r."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    if name == "ellipse":  # clearly elongated, never a circle
        pts = np.stack([r * np.cos(t), r * rng.uniform(0.3, 0.6) * np.sin(t)], 1)
    elif name == "pentagon":
        k = np.arange(5) * 2 * np.pi / 5 - np.pi / 2
        pts = np.stack([r * np.cos(k), r * np.sin(k)], 1)
    elif name == "arrow":
        w, h = 0.25 * r, 0.6 * r
        pts = np.array([[-r, -w], [r - h, -w], [r - h, -2 * w - 0.2 * r], [r, 0], [r - h, 2 * w + 0.2 * r],
                        [r - h, w], [-r, w]])
    elif name == "crescent":
        outer = np.stack([r * np.cos(t[:25] * 1.0 - np.pi / 2), r * np.sin(t[:25] - np.pi / 2)], 1)
        inner = np.stack([0.35 * r + 0.75 * r * np.cos(t[:25][::-1] - np.pi / 2),
                          0.95 * r * np.sin(t[:25][::-1] - np.pi / 2)], 1)
        pts = np.concatenate([outer, inner])
    elif name == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], 1) * (r / 17)
    elif name == "trapezoid":
        top = rng.uniform(0.2, 0.5)
        pts = np.array([[-r, 0.6 * r], [r, 0.6 * r], [top * r, -0.6 * r], [-top * r, -0.6 * r]])
    elif name == "blob":  # irregular closed curve: a random low-frequency radius profile
        radius = np.ones_like(t)
        for harmonic in range(2, 6):
            radius += rng.uniform(0.05, 0.25) * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * (r * radius / radius.max())[:, None]
    else:
        raise ValueError(f"unknown pretraining shape {name!r}")
    return _rotate(pts, angle)


def _texture(size: tuple[int, int], colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float fill for a textured blob: the colour modulated by noise or stripes."""
    h, w = size
    side = max(h, w, 8)
    t = _smooth_noise(side, rng)[:h, :w] if rng.random() < 0.5 else (
        0.5 + 0.5 * np.sin(np.mgrid[0:h, 0:w][1] / rng.uniform(1.5, 4)))
    return np.clip(colour * (0.55 + 0.9 * t[..., None] * 0.5), 0, 255)


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, px))  # Pillow's bundled font: nothing is downloaded


def _draw_glyph(image: np.ndarray, glyph: str, cx: float, cy: float, size: float, angle: float,
                colour: tuple[int, int, int]) -> np.ndarray | None:
    """Draw one glyph in place; return its box (x1, y1, x2, y2) from its actual pixels, or None if clipped away."""
    canvas = int(size * 2.2) + 8
    mask = Image.new("L", (canvas, canvas), 0)
    font = _font(int(size * 1.25))
    ImageDraw.Draw(mask).text((canvas / 2, canvas / 2), glyph, fill=255, font=font, anchor="mm")
    mask = mask.rotate(np.degrees(angle), resample=Image.BILINEAR, center=(canvas / 2, canvas / 2))
    m = np.asarray(mask, np.float32) / 255.0
    S = image.shape[0]
    x0, y0 = int(round(cx - canvas / 2)), int(round(cy - canvas / 2))
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(S, x0 + canvas), min(S, y0 + canvas)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    sub = m[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0][..., None]
    region = image[iy0:iy1, ix0:ix1].astype(np.float32)
    image[iy0:iy1, ix0:ix1] = np.clip(region * (1 - sub) + np.asarray(colour, np.float32) * sub, 0, 255)
    ys, xs = np.nonzero(sub[..., 0] > 0.5)
    if len(xs) == 0:
        return None
    return np.array([ix0 + xs.min(), iy0 + ys.min(), ix0 + xs.max() + 1, iy0 + ys.max() + 1], np.float32)


def _draw_shape(image: np.ndarray, name: str, cx: float, cy: float, size: float, angle: float,
                colour: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray | None:
    pts = _shape_polygon(name, size / 2, angle, rng) + [cx, cy]
    S = image.shape[0]
    if name == "blob":
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        x1, y1 = np.clip(np.floor(pts.min(0)), 0, S).astype(int)
        x2, y2 = np.clip(np.ceil(pts.max(0)), 0, S).astype(int)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        alpha = mask[y1:y2, x1:x2, None].astype(np.float32) / 255.0
        fill = _texture((y2 - y1, x2 - x1), np.asarray(colour, np.float32), rng)
        image[y1:y2, x1:x2] = np.clip(image[y1:y2, x1:x2] * (1 - alpha) + fill * alpha, 0, 255)
    else:
        cv2.fillPoly(image, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)
    x1, y1 = np.clip(pts.min(0), 0, S)
    x2, y2 = np.clip(pts.max(0), 0, S)
    return np.array([x1, y1, x2, y2], np.float32)


def _iou_max(box: np.ndarray, others: list[np.ndarray]) -> float:
    if not others:
        return 0.0
    o = np.asarray(others)
    ix = np.clip(np.minimum(box[2], o[:, 2]) - np.maximum(box[0], o[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], o[:, 3]) - np.maximum(box[1], o[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1]) - inter
    return float((inter / np.maximum(union, 1e-9)).max())


def render_image(spec: PretrainSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: (S, S, 3) BGR uint8, boxes (N, 4) xyxy pixels, classes (N,) into PRETRAIN_CLASSES."""
    S, scale = spec.image_size, spec.image_size / 160
    image = _background(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], S, rng).astype(np.float32)
    n = 0 if rng.random() < spec.empty_fraction else int(rng.integers(1, spec.max_objects + 1))
    boxes, classes, placed = [], [], []
    for _ in range(n):
        cls = int(rng.integers(len(PRETRAIN_CLASSES)))
        size = float(np.exp(rng.uniform(np.log(spec.min_size), np.log(spec.max_size)))) * scale
        angle = float(rng.uniform(-np.pi, np.pi)) if rng.random() < 0.5 else float(rng.uniform(-0.3, 0.3))
        cx, cy = rng.uniform(size * 0.3, S - size * 0.3, 2)  # objects may be cut by the border
        rough = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
        if _iou_max(rough, placed) > 0.25:
            continue
        # contrast from very low to high: the colour is a mix of a random colour and the local background
        local = image[int(np.clip(cy, 0, S - 1)), int(np.clip(cx, 0, S - 1))]
        strength = rng.uniform(0.35, 1.0)
        colour = tuple(int(v) for v in np.clip(strength * rng.uniform(0, 255, 3) + (1 - strength) * local, 0, 255))
        name = PRETRAIN_CLASSES[cls]
        if name.startswith("glyph_"):
            box = _draw_glyph(image, name[len("glyph_"):], cx, cy, size, angle, colour)
        else:
            box = _draw_shape(image, name, cx, cy, size, angle, colour, rng)
        if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        placed.append(rough)
        boxes.append(box)
        classes.append(cls)
    if rng.random() < 0.4:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.5:
        image = image + rng.normal(0, rng.uniform(2, 18), image.shape)
    image = np.clip((image - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-30, 30), 0, 255)
    return image.astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def generate_pretrain_dataset(spec: PretrainSpec, out_dir: str | Path) -> Path:
    """Write the pretraining set to `out_dir` (which must not exist or be empty), atomically; return it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: already exists and is not empty")
    return write_directory_atomically(out_dir, lambda tmp: _write_all(spec, tmp))


def _write_all(spec: PretrainSpec, root: Path) -> None:
    rng = np.random.default_rng([spec.seed, 0x5EED])  # never the built-in dataset's stream
    for split, count in (("train", spec.n_train), ("val", spec.n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(count):
            image, boxes, classes = render_image(spec, rng)
            image_id = f"pre_{split}_{index:06d}"
            cv2.imwrite(str(root / "images" / split / f"{image_id}.png"), image)
            (root / "labels" / split / f"{image_id}.txt").write_text(
                format_yolo_label(boxes, classes, spec.image_size, spec.image_size))
    data = {"path": ".", "train": "images/train", "val": "images/val",
            "names": dict(enumerate(PRETRAIN_CLASSES))}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / "spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")


def pretrain_dataset(spec: PretrainSpec, out_dir: str | Path) -> tuple[Path, bool]:
    """The pretraining set for `spec` in `out_dir`: generated, or reused if it is already there; (dir, reused).

    A folder made from another spec is refused, naming the file and the keys that differ, so that a
    changed parameter never trains on stale images.
    """
    out_dir = Path(out_dir)
    spec_file = out_dir / "spec.json"
    if spec_file.is_file():
        try:
            found = json.loads(spec_file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{spec_file}: unreadable ({err}); delete {out_dir} to regenerate") from err
        wanted = asdict(spec)
        differ = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
        if differ:
            raise ValueError(f"{spec_file}: this pretraining set was made with other settings ({', '.join(differ)}); "
                             f"delete {out_dir} or choose another output directory")
        return out_dir, True
    return generate_pretrain_dataset(spec, out_dir), False
