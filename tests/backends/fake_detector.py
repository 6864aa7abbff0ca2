"""`FakeDetectorBackend`: the `DetectorBackend` protocol with no training, answers derived from image file names.

For tests where the detector is not what is under test: same inputs, same outputs, in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mgral_backends.protocol import DetectorError, ServingModel, TrainedDetector, serving_frame
from mgral_core.detections import Detections


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class FakeDetectorBackend:
    """Deterministic detections, embeddings and head features from a hash of each image's file name.

    Args:
        num_classes: classes of the fake detections' class probabilities.
        dim: embedding width D.
        imgsz: side of the square the fake boxes lie in, and the head features' imgsz.
        finds_nothing: a detector that learned nothing: no box on any image, validation mAP 0.
        start: the configured pretrained start (a path or name), or None for a start from random weights.

    "Weights" are a JSON file written by `train`; predictions do not depend on them. Nothing is
    read from the images, so any path works. `calls` lists the method names in call order.
    """

    def __init__(self, num_classes: int = 8, dim: int = 16, imgsz: int = 64, finds_nothing: bool = False,
                 start: str | Path | None = None):
        self.num_classes, self.dim, self.imgsz, self.finds_nothing = num_classes, dim, imgsz, finds_nothing
        self.start = start
        self.calls: list[str] = []

    def embedding(self, path: str | Path) -> np.ndarray:
        """(D,) float32 embedding `predict` gives the image at `path`."""
        return _rng("embedding", Path(path).name).standard_normal(self.dim).astype(np.float32)

    def detections(self, path: str | Path) -> Detections:
        """The 0 to 3 boxes `predict` gives the image at `path`, with class probabilities."""
        rng = _rng("detections", Path(path).name)
        n = 0 if self.finds_nothing else int(rng.integers(0, 4))
        corners = np.sort(rng.uniform(0, self.imgsz, (n, 2, 2)), axis=1)  # (n, 2 corners, xy)
        probs = rng.uniform(0, 1, (n, self.num_classes)).astype(np.float32)  # (n, C)
        return Detections(corners.reshape(n, 4).astype(np.float32), probs.max(1), probs.argmax(1).astype(np.int64),
                          probs)

    def train(self, train_images: Sequence[str | Path], val_images: Sequence[str | Path],
              class_names: Sequence[str], out_dir: Path, *, epochs: int, init_weights: Path | None = None,
              seed: int | None = None) -> TrainedDetector:
        """Write `out_dir/best.pt` as JSON describing the call; the validation mAP grows with len(train_images)."""
        self.calls.append("train")
        if init_weights is not None and not Path(init_weights).exists():
            raise DetectorError(f"{init_weights}: warm-start weights not found")
        weights = Path(out_dir) / "best.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_text(json.dumps({"fake": True, "train_images": len(train_images), "val_images": len(val_images),
                                       "classes": list(class_names), "epochs": epochs, "seed": seed,
                                       "init_weights": None if init_weights is None else str(init_weights)}))
        val_map = 0.0 if self.finds_nothing else len(train_images) / (len(train_images) + 100)
        return TrainedDetector(weights, val_map, min(1.0, 1.5 * val_map), epochs)

    def predict(self, weights: str | Path, paths: Sequence[str | Path], *, want_embeddings: bool = True,
                progress: Callable[[int], None] | None = None) -> tuple[list[Detections], np.ndarray | None]:
        """`detections(path)` per path and, if asked, the (N, D) stack of `embedding(path)`."""
        self.calls.append("predict")
        if not Path(weights).exists():
            raise DetectorError(f"{weights}: weights not found")
        detections = [self.detections(p) for p in paths]
        if progress is not None:
            progress(len(paths))
        embeddings = None
        if want_embeddings:
            embeddings = np.array([self.embedding(p) for p in paths], np.float32).reshape(-1, self.dim)  # (N, D)
        return detections, embeddings

    def start_weights(self, out_dir: Path) -> Path | None:
        """`start` itself when it is an existing file (a user's .pt), else a JSON "checkpoint" naming it; None
        without a start. A `start` ending in .pt that does not exist raises DetectorError."""
        self.calls.append("start_weights")
        if self.start is None:
            return None
        if str(self.start).endswith(".pt"):
            if not Path(self.start).is_file():
                raise DetectorError(f"detector.model: {self.start} does not exist")
            return Path(self.start)
        target = Path(out_dir) / "pretrained_start.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"fake": True, "start": str(self.start)}))
        return target

    def serving_model(self, weights: str | Path, class_names: Sequence[str], out_dir: Path) -> ServingModel:
        """`out_dir/fake_detector.json` (this detector's settings, the class names and the weights' JSON), loaded
        by this module's `_load_pyfunc`; no code shipped (tests import it), no requirement."""
        self.calls.append("serving_model")
        if not Path(weights).exists():
            raise DetectorError(f"{weights}: weights not found")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        settings = {"num_classes": self.num_classes, "dim": self.dim, "imgsz": self.imgsz,
                    "finds_nothing": self.finds_nothing, "class_names": list(class_names),
                    "weights": json.loads(Path(weights).read_text())}
        (Path(out_dir) / "fake_detector.json").write_text(json.dumps(settings))
        return ServingModel(__name__, Path(out_dir), (), (), {"conf": 0.0})

    def head_features(self, weights: str | Path, paths: Sequence[str | Path], ids: Sequence[str], *,
                      progress: Callable[[int], None] | None = None):
        """One (N, 4, 2, 2) float16 level of features per image, from the file names; image shapes imgsz x imgsz."""
        import torch

        from mgral_backends.ultralytics.proxy_training import HeadFeatures

        self.calls.append("head_features")
        if len(paths) != len(ids):
            raise ValueError(f"{len(paths)} paths for {len(ids)} ids")
        level = np.stack([_rng("head", Path(p).name).standard_normal((4, 2, 2)) for p in paths]).astype(np.float16)
        if progress is not None:
            progress(len(paths))
        shapes = np.full((len(ids), 2), self.imgsz, np.int64)
        return HeadFeatures(np.asarray(ids, dtype=str), (torch.from_numpy(level),), shapes, self.imgsz)

    def head_proxy(self, weights: str | Path, features, labeled: Mapping, val: Mapping, config):
        """A `FakeRecordProxy`: record values from a hash of the batch ids, after checking features cover them."""
        self.calls.append("head_proxy")
        features.rows([*labeled, *val])
        return FakeRecordProxy(features, list(labeled), config)


class FakeRecordProxy:
    """What `record_values` asks of a proxy: `record(batch, seeds, pseudo)` giving a RecordScore."""

    def __init__(self, features, labeled_ids: Sequence[str], config):
        self.features, self.labeled_ids, self.config = features, list(labeled_ids), config

    def record(self, batch: Mapping, seeds: Sequence[int] | None = None, pseudo: bool = True):
        """A RecordScore in [0, 1) fixed by the batch ids and seeds; raises ValueError for a batch image in L."""
        from mgral_backends.ultralytics.proxy_training import RecordScore

        if set(batch) & set(self.labeled_ids):
            raise ValueError("batch images already in L")
        self.features.rows(list(batch))
        seeds = tuple(self.config.seeds if seeds is None else seeds)
        value = float(_rng("record", sorted(batch), seeds, pseudo).uniform())
        digest = hashlib.sha256(repr((sorted(batch), seeds, pseudo)).encode()).hexdigest()[:16]
        return RecordScore(value, value, 1 - value, 0.0, 1.0, 1 - value, 0.0, digest)


class FakeServedDetector:
    """What `_load_pyfunc` gives back: `predict(paths)` -> the boxes of `FakeDetectorBackend.detections`."""

    def __init__(self, folder: str | Path):
        settings = json.loads((Path(folder) / "fake_detector.json").read_text())
        self.class_names, self.weights = settings.pop("class_names"), settings.pop("weights")
        self.backend = FakeDetectorBackend(**settings)

    def get_raw_model(self) -> dict:
        """The weights file's JSON (what `train` wrote)."""
        return self.weights

    def predict(self, paths, params=None):
        detections = [self.backend.detections(p) for p in paths]
        keep = [d.scores >= (params or {}).get("conf", 0.0) for d in detections]
        detections = [Detections(d.boxes_xyxy[k], d.scores[k], d.classes[k]) for d, k in zip(detections, keep)]
        return serving_frame([str(p) for p in paths], detections, self.class_names)


def _load_pyfunc(data_path: str) -> FakeServedDetector:
    """The MLflow loader-module entry point of the fake detector's registered versions."""
    return FakeServedDetector(data_path)
