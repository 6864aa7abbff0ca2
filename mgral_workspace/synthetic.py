"""The built-in dataset: generated shapes on three visual domains, long-tailed, with near-duplicates.

Deterministic from a seed (same seed, byte-identical files), written in YOLO layout plus COCO JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from mgral_formats.yolo import format_yolo_label
from mgral_workspace.atomic import write_directory_atomically

DEFAULT_CLASSES = ("circle", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon")
DEFAULT_CLASS_WEIGHTS = (0.30, 0.22, 0.16, 0.11, 0.08, 0.06, 0.045, 0.025)
DEFAULT_DOMAINS = ("clean", "cluttered", "degraded")
DEFAULT_DOMAIN_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Sizes are in images; object sizes in pixels at `image_size`.

    Attributes:
        seed: every random choice derives from it.
        image_size: square image side.
        n_pool / n_val / n_test: images per split ("train" on disk is the unlabeled pool).
        class_names / class_weights: object classes and their long-tailed frequencies.
        domain_names / domain_weights: visual domains (clean, cluttered, degraded) and prevalence.
        max_objects: objects per non-empty image are 1..max_objects.
        empty_fraction: share of images with no object.
        min_size / max_size: object size range at image_size 160 (scaled with image_size).
        duplicate_fraction: share of pool images that are near-copies inside clusters.
        cluster_size: (min, max) images per near-duplicate cluster.
    """

    seed: int = 0
    image_size: int = 160
    n_pool: int = 2000
    n_val: int = 300
    n_test: int = 500
    class_names: tuple[str, ...] = DEFAULT_CLASSES
    class_weights: tuple[float, ...] = DEFAULT_CLASS_WEIGHTS
    domain_names: tuple[str, ...] = DEFAULT_DOMAINS
    domain_weights: tuple[float, ...] = DEFAULT_DOMAIN_WEIGHTS
    max_objects: int = 6
    empty_fraction: float = 0.05
    min_size: int = 10
    max_size: int = 60
    duplicate_fraction: float = 0.3
    cluster_size: tuple[int, int] = (5, 15)

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.class_weights):
            raise ValueError("class_names and class_weights must have the same length")
        if len(self.domain_names) != len(self.domain_weights):
            raise ValueError("domain_names and domain_weights must have the same length")
        if min(self.n_pool, self.n_val, self.n_test) < 1:
            raise ValueError("n_pool, n_val and n_test must each be at least 1")
        if not 0 <= self.duplicate_fraction < 1 or not 0 <= self.empty_fraction < 1:
            raise ValueError("duplicate_fraction and empty_fraction must be in [0, 1)")


@dataclass
class _Scene:
    domain: int
    objects: list  # (class, cx, cy, size, angle, colour)
    background_seed: int


def _shape_points(cls_name: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Polygon (P, 2) of a class's shape; circles and rings are approximated by 32-gons."""
    r = size / 2
    def regular(n: int, offset: float = 0.0, radius: float = r) -> np.ndarray:
        t = angle + offset + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)
    if cls_name in ("circle", "ring"):
        return regular(32)
    if cls_name == "square":
        return regular(4, np.pi / 4)
    if cls_name == "diamond":
        return np.array([[cx, cy - r], [cx + 0.62 * r, cy], [cx, cy + r], [cx - 0.62 * r, cy]])
    if cls_name == "triangle":
        return regular(3, -np.pi / 2)
    if cls_name == "hexagon":
        return regular(6)
    if cls_name == "star":
        outer, inner = regular(5, -np.pi / 2), regular(5, -np.pi / 2 + np.pi / 5, 0.42 * r)
        return np.stack([outer, inner], 1).reshape(-1, 2)
    if cls_name == "cross":
        w = 0.3 * r
        pts = np.array([[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w], [w, r], [-w, r], [-w, w],
                        [-r, w], [-r, -w], [-w, -w]])
        c, s = np.cos(angle), np.sin(angle)
        return pts @ np.array([[c, s], [-s, c]]) + [cx, cy]
    return regular(max(3, len(cls_name)))  # any other class name: a distinct regular polygon


def _background(domain: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 background for a domain."""
    base = rng.uniform(150, 230)
    yy, xx = np.mgrid[0:size, 0:size] / size
    gradient = (rng.uniform(-25, 25) * xx + rng.uniform(-25, 25) * yy)[..., None]
    image = np.clip(base + gradient + rng.uniform(-10, 10, 3), 0, 255)
    if domain == "cluttered":
        image = image.astype(np.uint8).copy()
        for _ in range(int(rng.integers(15, 35))):  # distractor strokes and blobs, not objects
            colour = tuple(int(v) for v in rng.integers(40, 220, 3))
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            if rng.random() < 0.5:
                p2 = tuple(int(v) for v in rng.integers(0, size, 2))
                cv2.line(image, p1, p2, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
            else:
                axes = tuple(int(v) for v in rng.integers(2, max(3, size // 10), 2))
                cv2.ellipse(image, p1, axes, float(rng.uniform(0, 180)), 0, 360, colour, 1, cv2.LINE_AA)
        noise = rng.normal(0, 12, (size // 8, size // 8, 3))
        image = np.clip(image + cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255)
    return image.astype(np.uint8)


def _render(scene: _Scene, names: tuple[str, ...], domains: tuple[str, ...], size: int, jitter_seed: int | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a scene; returns image (S, S, 3) BGR uint8, boxes (N, 4) xyxy pixels, classes (N,)."""
    rng = np.random.default_rng(scene.background_seed)
    domain = domains[scene.domain]
    image = _background(domain, size, rng)
    jit = np.random.default_rng(jitter_seed) if jitter_seed is not None else None
    shift = jit.uniform(-3, 3, 2) * size / 160 if jit is not None else np.zeros(2)
    boxes, classes = [], []
    for cls, cx, cy, obj_size, angle, colour in scene.objects:
        pts = _shape_points(names[cls], cx + shift[0], cy + shift[1], obj_size, angle)
        colour = np.asarray(colour, float)
        if domain == "degraded":  # low contrast: pull the colour towards the background
            colour = 0.35 * colour + 0.65 * image[int(np.clip(cy, 0, size - 1)), int(np.clip(cx, 0, size - 1))]
        colour = tuple(int(v) for v in np.clip(colour, 0, 255))
        poly = np.round(pts * 16).astype(np.int32)  # 4 fractional bits for sub-pixel drawing
        if names[cls] == "ring":
            cv2.polylines(image, [poly], True, colour, max(2, int(obj_size / 6)), cv2.LINE_AA, shift=4)
        else:
            cv2.fillPoly(image, [poly], colour, cv2.LINE_AA, shift=4)
        x1, y1 = np.clip(pts.min(0), 0, size)
        x2, y2 = np.clip(pts.max(0), 0, size)
        if names[cls] == "ring":
            pad = max(2, int(obj_size / 6)) / 2
            x1, y1, x2, y2 = max(0, x1 - pad), max(0, y1 - pad), min(size, x2 + pad), min(size, y2 + pad)
        if (x2 - x1) >= 2 and (y2 - y1) >= 2:
            boxes.append([x1, y1, x2, y2])
            classes.append(cls)
    if domain == "degraded":
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.8, 1.6))
        image = np.clip(image + rng.normal(0, 14, image.shape), 0, 255).astype(np.uint8)
    if jit is not None:
        image = np.clip(image.astype(float) * jit.uniform(0.9, 1.1) + jit.normal(0, 3, image.shape), 0, 255)
        image = image.astype(np.uint8)
    return image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def _iou(box: np.ndarray, others: list) -> float:
    if not others:
        return 0.0
    o = np.asarray(others)
    ix = np.clip(np.minimum(box[2], o[:, 2]) - np.maximum(box[0], o[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], o[:, 3]) - np.maximum(box[1], o[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float((inter / (area + (o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1]) - inter)).max())


def _new_scene(spec: SyntheticSpec, rng: np.random.Generator) -> _Scene:
    size = spec.image_size
    scale = size / 160
    domain = int(rng.choice(len(spec.domain_names), p=np.asarray(spec.domain_weights) / sum(spec.domain_weights)))
    n = 0 if rng.random() < spec.empty_fraction else int(rng.integers(1, spec.max_objects + 1))
    weights = np.asarray(spec.class_weights) / sum(spec.class_weights)
    objects, placed = [], []
    for _ in range(n):
        cls = int(rng.choice(len(weights), p=weights))
        obj = float(np.exp(rng.uniform(np.log(spec.min_size), np.log(spec.max_size)))) * scale
        for _attempt in range(20):
            cx, cy = rng.uniform(obj / 2, size - obj / 2, 2)
            box = np.array([cx - obj / 2, cy - obj / 2, cx + obj / 2, cy + obj / 2])
            if _iou(box, placed) < 0.2:
                placed.append(box)
                colour = rng.integers(0, 256, 3)
                objects.append((cls, float(cx), float(cy), obj, float(rng.uniform(-0.25, 0.25)), tuple(colour)))
                break
    return _Scene(domain, objects, int(rng.integers(2**31)))


def _coco(names: tuple[str, ...], rows: list[tuple[str, str, np.ndarray, np.ndarray]], size: int) -> dict:
    images, annotations = [], []
    for index, (image_id, file_name, boxes, classes) in enumerate(rows, start=1):
        images.append({"id": index, "file_name": file_name, "width": size, "height": size})
        for (x1, y1, x2, y2), cls in zip(boxes.tolist(), classes.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": int(cls) + 1,
                                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def generate_dataset(spec: SyntheticSpec, out_dir: str | Path) -> Path:
    """Write the dataset to `out_dir` (which must not exist or be empty), atomically.

    Layout: images/{train,val,test}/<id>.png, labels/{train,val,test}/<id>.txt (YOLO),
    data.yaml, annotations/instances_{split}.json (COCO), metadata.csv (domain, cluster).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: already exists and is not empty")
    return write_directory_atomically(out_dir, lambda tmp: _write_all(spec, tmp))


def _write_all(spec: SyntheticSpec, root: Path) -> None:
    rng = np.random.default_rng(spec.seed)
    meta, counter = [], 0
    for split, count in (("train", spec.n_pool), ("val", spec.n_val), ("test", spec.n_test)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        scenes: list[tuple[_Scene, int | None, int]] = []  # (scene, jitter seed, cluster id)
        n_dup = int(count * spec.duplicate_fraction) if split == "train" else 0
        cluster = 0
        while len(scenes) < n_dup:
            base = _new_scene(spec, rng)
            members = min(int(rng.integers(spec.cluster_size[0], spec.cluster_size[1] + 1)), n_dup - len(scenes))
            scenes += [(base, int(rng.integers(2**31)), cluster) for _ in range(members)]
            cluster += 1
        scenes += [(_new_scene(spec, rng), None, -1) for _ in range(count - len(scenes))]
        order = rng.permutation(len(scenes))  # clusters spread over the pool
        coco_rows = []
        for position in order:
            scene, jitter, cluster_id = scenes[position]
            image, boxes, classes = _render(scene, spec.class_names, spec.domain_names, spec.image_size, jitter)
            image_id = f"syn_{counter:06d}"
            counter += 1
            cv2.imwrite(str(root / "images" / split / f"{image_id}.png"), image)
            (root / "labels" / split / f"{image_id}.txt").write_text(
                format_yolo_label(boxes, classes, spec.image_size, spec.image_size))
            coco_rows.append((image_id, f"../images/{split}/{image_id}.png", boxes, classes))
            meta.append({"image_id": image_id, "split": split, "domain": spec.domain_names[scene.domain],
                         "cluster_id": cluster_id, "n_objects": len(classes),
                         "classes": " ".join(map(str, classes.tolist()))})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(_coco(spec.class_names, coco_rows, spec.image_size)))
    pd.DataFrame(meta).to_csv(root / "metadata.csv", index=False)
    data = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test",
            "names": {i: n for i, n in enumerate(spec.class_names)}}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def dataset_stats(dataset_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(class table: instances and share per split, domain table: images and share per split)."""
    dataset_dir = Path(dataset_dir)
    meta = pd.read_csv(dataset_dir / "metadata.csv", dtype={"image_id": str}, keep_default_na=False)
    names = yaml.safe_load((dataset_dir / "data.yaml").read_text())["names"]
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    rows = []
    for split, group in meta.groupby("split", sort=False):
        classes = [int(c) for text in group["classes"] for c in str(text).split() if c != ""]
        counts = np.bincount(classes, minlength=len(names))
        for name, n in zip(names, counts):
            rows.append({"split": split, "class": name, "instances": int(n), "share": n / max(1, counts.sum())})
    class_table = pd.DataFrame(rows).pivot(index="class", columns="split", values="share").loc[names]
    class_table.insert(0, "instances (all)", pd.DataFrame(rows).groupby("class")["instances"].sum().loc[names])
    domain_table = pd.crosstab(meta["domain"], meta["split"], normalize="columns")
    domain_table.insert(0, "images (all)", meta["domain"].value_counts())
    return class_table, domain_table
