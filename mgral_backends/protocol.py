"""What a cycle needs from a detector backend: train, predict (detections + embeddings), head features, and
a stand-alone predictor for the model registry.

A backend holds its own settings (image size, confidence floor, batch, device); callers pass
only data: image paths, ids, weights files and output folders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mgral_core.detections import Detections

if TYPE_CHECKING:
    from mgral_backends.ultralytics.proxy_training import HeadFeatures, HeadProxy, HeadTuneConfig, Targets


class DetectorError(RuntimeError):
    """Training or inference failed in a way the user should see (bad weights, diverged loss)."""


class TrainingDiverged(DetectorError):
    """The training loss or validation fitness became NaN or infinite; no weights were kept."""

    def __init__(self, run_dir: Path, epoch: int, epochs: int, what: str):
        super().__init__(
            f"detector training diverged: {what} at epoch {epoch}/{epochs} (run dir {run_dir}); "
            "its weights were discarded. Check the warm-start weights, the labels and the detector "
            "settings in params.yaml"
        )
        self.run_dir, self.epoch, self.epochs, self.what = run_dir, epoch, epochs, what


@dataclass(frozen=True)
class TrainedDetector:
    """Where a finished training left its weights, and its own validation figures."""

    weights: Path
    val_map50_95: float
    val_map50: float
    epochs: int


SERVING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "string"), ("class", "string"), ("score", "double"),
    ("x1", "double"), ("y1", "double"), ("x2", "double"), ("y2", "double"))
"""What a served detector's `predict` returns: one row per box (pixels of the original image), with its type."""


@dataclass(frozen=True)
class ServingModel:
    """One trained detector as a stand-alone predictor, in files: what a model registry stores.

    `loader_module` is MLflow's loader-module contract without MLflow: `_load_pyfunc(data_path)`
    returns an object whose `predict(images, params=None)` gives a pandas DataFrame with
    SERVING_COLUMNS. The module must import with only `code_paths` and `requirements` present.
    """

    loader_module: str
    data_path: Path
    """A folder: the weights and the settings the loader reads."""
    code_paths: tuple[Path, ...]
    """Packages the loader imports, shipped with the model (empty when they are installed anyway)."""
    requirements: tuple[str, ...]
    """pip requirements of the loader, pinned to the versions that trained the detector."""
    params: dict[str, float]
    """Inference parameters `predict` accepts, with their defaults (e.g. the confidence floor)."""


def serving_frame(names: Sequence[str], detections: Sequence[Detections], class_names: Sequence[str]) -> pd.DataFrame:
    """One row per box of `detections[i]`, labelled `names[i]`, in SERVING_COLUMNS order and types."""
    rows = {column: [] for column, _ in SERVING_COLUMNS}
    for name, found in zip(names, detections):
        rows["image"] += [name] * len(found.scores)
        rows["class"] += [class_names[c] for c in found.classes]
        rows["score"] += found.scores.astype(np.float64).tolist()
        for column, values in zip(("x1", "y1", "x2", "y2"), found.boxes_xyxy.astype(np.float64).T):  # (4, n)
            rows[column] += values.tolist()
    return pd.DataFrame({column: pd.Series(rows[column], dtype="object" if kind == "string" else "float64")
                         for column, kind in SERVING_COLUMNS})


@runtime_checkable
class DetectorBackend(Protocol):
    """The detector behind a cycle: one object per detector configuration.

    `isinstance(obj, DetectorBackend)` checks only that the six methods exist, not their signatures.
    """

    def train(self, train_images: Sequence[str | Path], val_images: Sequence[str | Path],
              class_names: Sequence[str], out_dir: Path, *, epochs: int, init_weights: Path | None = None,
              seed: int | None = None) -> TrainedDetector:
        """Train on `train_images` (labels found beside them), validate on `val_images`.

        Writes whatever data files the backend needs under `out_dir` and leaves the weights at
        `TrainedDetector.weights` inside it. Warm-starts from `init_weights` when given. Raises
        DetectorError (TrainingDiverged for a NaN or infinite loss), leaving no weights behind.
        """
        ...

    def predict(self, weights: str | Path, paths: Sequence[str | Path], *, want_embeddings: bool = True,
                progress: Callable[[int], None] | None = None) -> tuple[list[Detections], np.ndarray | None]:
        """One Detections per path (boxes in original-image pixels) and, if asked, (N, D) float32 embeddings.

        `progress` is called with the number of images done after each chunk. Caches nothing.
        """
        ...

    def start_weights(self, out_dir: Path) -> Path | None:
        """Weights of the model a first training would start from, for `predict` before anything is trained.

        The user's own checkpoint when the configuration names one, or the model with its pretrained start
        written as a checkpoint under `out_dir`; None when training starts from random weights (its
        embeddings would say nothing). Raises DetectorError when the configured start does not exist.
        """
        ...

    def serving_model(self, weights: str | Path, class_names: Sequence[str], out_dir: Path) -> ServingModel:
        """Write a stand-alone predictor of `weights` into `out_dir` (the weights copied, the inference settings
        beside them): the model registry's version of a cycle's detector. Its `predict` gives the same boxes
        as `predict` here. Raises DetectorError when `weights` does not exist.
        """
        ...

    def head_features(self, weights: str | Path, paths: Sequence[str | Path], ids: Sequence[str], *,
                      progress: Callable[[int], None] | None = None) -> HeadFeatures:
        """The inputs of the detector's head for each image, one row per id: what a record proxy trains on."""
        ...

    def head_proxy(self, weights: str | Path, features: HeadFeatures, labeled: Mapping[str, Targets],
                   val: Mapping[str, Targets], config: HeadTuneConfig) -> HeadProxy:
        """The cycle's record proxy: the head of `weights` over cached `features`, labels of L and val."""
        ...
