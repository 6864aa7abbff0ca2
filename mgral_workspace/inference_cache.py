"""One cycle's detector output over a set of images (detections + embeddings) stored as a single .npz."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mgral_workspace.atomic import atomic_open
from mgral_core.detections import Detections
from mgral_core.image_descriptors import task_aware_descriptors


@dataclass(frozen=True)
class InferenceResult:
    """Detections and embeddings of `ids`, rows aligned: embeddings[i] and detections[i] belong to ids[i]."""

    ids: np.ndarray  # (N,) str
    embeddings: np.ndarray  # (N, D) float32
    detections: list[Detections]

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.embeddings) == len(self.detections)):
            raise ValueError(
                f"ids ({len(self.ids)}), embeddings ({len(self.embeddings)}) and detections "
                f"({len(self.detections)}) must have the same length"
            )

    def subset(self, ids) -> "InferenceResult":
        """Rows for `ids`, in that order; raises KeyError naming a missing id."""
        index = {image_id: i for i, image_id in enumerate(self.ids)}
        rows = []
        for image_id in ids:
            if image_id not in index:
                raise KeyError(f"no inference result for image id {image_id!r}")
            rows.append(index[image_id])
        return InferenceResult(
            np.asarray(ids, dtype=str), self.embeddings[rows], [self.detections[i] for i in rows]
        )

    @cached_property
    def digest(self) -> bytes:
        """blake2b (16 bytes) of the ids and embeddings, hashed once per object (a 100k x 256 pool is 100 MB):
        what per-cycle caches key this inference by. The arrays are not to be changed in place."""
        hasher = hashlib.blake2b(digest_size=16)
        hasher.update("\n".join(self.ids.tolist()).encode())
        hasher.update(str(self.embeddings.shape).encode())
        hasher.update(np.ascontiguousarray(self.embeddings).tobytes())
        return hasher.digest()

    def detections_by_id(self) -> dict[str, Detections]:
        return dict(zip(self.ids.tolist(), self.detections))

    def task_aware_features(self, num_classes: int, pca_dims: int) -> Callable[[np.ndarray], np.ndarray]:
        """ids (k,) -> (k, F) task-aware descriptors (`mgral_core.image_descriptors`) of those images.

        The descriptors of every image here are computed once, standardised over all of them (the
        cycle's whole pool), so every batch is described on one scale; the function raises KeyError
        naming an id this inference does not hold.
        """
        features = task_aware_descriptors(self.embeddings, self.detections, num_classes, pca_dims)  # (N, F)
        row = {image_id: i for i, image_id in enumerate(self.ids.tolist())}

        def features_of(ids: np.ndarray) -> np.ndarray:
            try:
                return features[[row[i] for i in np.asarray(ids).tolist()]]
            except KeyError as err:
                raise KeyError(f"no inference result for image id {err.args[0]!r}") from None

        return features_of


def save_inference(path: str | Path, result: InferenceResult) -> Path:
    """Write atomically: ragged detections are concatenated with per-image offsets."""
    counts = np.array([len(d) for d in result.detections], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])  # (N + 1,)
    num_classes = next((d.class_probs.shape[1] for d in result.detections if d.class_probs is not None), 0)

    def cat(field: str, shape: tuple, dtype) -> np.ndarray:
        parts = [getattr(d, field) for d in result.detections if len(d)]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    path = Path(path)
    with atomic_open(path, "wb") as handle:
        np.savez(
            handle,
            ids=result.ids.astype(str),
            embeddings=result.embeddings.astype(np.float32),
            offsets=offsets,
            boxes=cat("boxes_xyxy", (0, 4), np.float32),
            scores=cat("scores", (0,), np.float32),
            classes=cat("classes", (0,), np.int64),
            probs=cat("class_probs", (0, num_classes), np.float32) if num_classes else np.zeros((0, 0), np.float32),
        )
    return path


def load_inference(path: str | Path, ids: Sequence[str] | None = None) -> InferenceResult:
    """The stored result, or only the rows of `ids` in that order (the same as `.subset(ids)`, without
    building every other image's detections); KeyError naming an id that has no result."""
    with np.load(Path(path), allow_pickle=False) as data:
        offsets, all_ids = data["offsets"], data["ids"].astype(str)
        rows = np.arange(len(all_ids)) if ids is None else _rows_of(all_ids, ids)
        boxes, scores, classes, probs = data["boxes"], data["scores"], data["classes"], data["probs"]
        has_probs = probs.ndim == 2 and probs.shape[1] > 0
        detections = [
            Detections(
                boxes[a:b], scores[a:b], classes[a:b],
                probs[a:b] if has_probs else None,
            )
            for a, b in zip(offsets[rows], offsets[rows + 1])
        ]
        embeddings = data["embeddings"] if ids is None else data["embeddings"][rows]
        return InferenceResult(all_ids if ids is None else np.asarray(ids, dtype=str), embeddings, detections)


def count_boxes(path: str | Path) -> tuple[int, int]:
    """(images, detected boxes) of a stored result, from its offsets alone (no detection is built)."""
    with np.load(Path(path), allow_pickle=False) as data:
        offsets = data["offsets"]
        return len(offsets) - 1, int(offsets[-1])


def _rows_of(all_ids: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    index = {image_id: i for i, image_id in enumerate(all_ids.tolist())}
    missing = next((image_id for image_id in ids if image_id not in index), None)
    if missing is not None:
        raise KeyError(f"no inference result for image id {missing!r}")
    return np.array([index[image_id] for image_id in ids], dtype=np.int64)
