"""A trained YOLO as a stand-alone predictor: the MLflow pyfunc loader module of the registered detector.

`write_serving_model` copies the weights and the inference settings into a folder; MLflow's
loader-module workflow (`mlflow.pyfunc.save_model(loader_module=__name__, ...)`, done in
`tasks/tracking.py`) calls `_load_pyfunc(folder)` at load time. Nothing here imports mlflow, and
loading downloads nothing: the .pt is read by `load_detection_model` under the offline set-up of `env`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgral_backends.protocol import DetectorError, ServingModel, serving_frame
from mgral_backends.ultralytics.detector import detect_images, load_detection_model
from mgral_workspace.config import DetectorParams

WEIGHTS_FILE = "detector.pt"
SETTINGS_FILE = "detector.json"
# what this module imports, shipped with the model so that it loads where MGRAL is not installed
CODE_PACKAGES = ("mgral_backends", "mgral_core", "mgral_workspace")
REQUIREMENTS = ("ultralytics", "torch", "torchvision", "opencv-python", "numpy", "pandas", "pydantic", "pyyaml")
_PACKAGES_ROOT = Path(__file__).resolve().parents[2]  # the repository, or site-packages when installed


def write_serving_model(weights: str | Path, class_names: Sequence[str], params: DetectorParams,
                        out_dir: Path) -> ServingModel:
    """`out_dir/detector`: `weights` and the settings `predict` reads (class names, imgsz, the confidence floor,
    batch and device of `params`: those of the cycle's own inference, so the boxes are the same);
    `out_dir/code`: the packages this module imports, without checkpoints (the pretrained start is not
    needed to predict)."""
    if not Path(weights).is_file():
        raise DetectorError(f"{weights}: weights not found")
    data, code = out_dir / "detector", out_dir / "code"  # MLflow stores them as data/detector and code/
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights, data / WEIGHTS_FILE)
    settings = {"class_names": list(class_names), "imgsz": params.imgsz, "conf": params.predict_conf,
                "batch": params.embed_batch, "device": params.device}
    (data / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    for package in CODE_PACKAGES:
        shutil.copytree(_PACKAGES_ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    return ServingModel(loader_module=__name__, data_path=data,
                        code_paths=tuple(code / package for package in CODE_PACKAGES),
                        requirements=tuple(f"{name}=={metadata.version(name)}" for name in REQUIREMENTS),
                        params={"conf": float(params.predict_conf)})


class RegisteredDetector:
    """`predict(images)` -> a DataFrame of boxes; the model is loaded once, on the CPU unless the settings say.

    Images are file paths, (H, W, 3) uint8 RGB arrays, an (N, H, W, 3) stack of them, a list mixing
    paths and arrays, or a DataFrame whose `image` column (else its first column) holds paths. The
    `image` column of the result is the path as given, or `array[i]` for the i-th input that is an array.
    """

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        settings = json.loads((folder / SETTINGS_FILE).read_text())
        self.class_names: list[str] = settings["class_names"]
        self.imgsz, self.conf, self.batch = int(settings["imgsz"]), float(settings["conf"]), int(settings["batch"])
        self.device = settings["device"]
        self.model = load_detection_model(folder / WEIGHTS_FILE, self.device)

    def get_raw_model(self):
        """The Ultralytics DetectionModel (a torch module, eval mode); `PyFuncModel.get_raw_model()` returns it."""
        return self.model

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Boxes of every image, one row each (`protocol.SERVING_COLUMNS`); `params={"conf": 0.25}` raises the
        confidence floor."""
        names, images = _images(model_input)
        conf = float((params or {}).get("conf", self.conf))
        detections, _ = detect_images(self.model, images, imgsz=self.imgsz, conf=conf, batch=self.batch,
                                      device=self.device, want_embeddings=False)
        return serving_frame(names, detections, self.class_names)


def _images(model_input: Any) -> tuple[list[str], list[str | np.ndarray]]:
    """(names, images) of what `predict` accepts; TypeError naming the input otherwise."""
    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        model_input = model_input[column].tolist()
    if isinstance(model_input, (str, Path)):
        model_input = [model_input]
    elif isinstance(model_input, np.ndarray):
        model_input = list(model_input) if model_input.ndim == 4 else [model_input]  # (N, H, W, 3) or (H, W, 3)
    if not isinstance(model_input, (list, tuple)):
        raise TypeError(f"predict takes image paths, (H, W, 3) uint8 RGB arrays, a list of them or a DataFrame "
                        f"with an 'image' column of paths; got {type(model_input).__name__}")
    names, images = [], []
    for i, item in enumerate(model_input):
        if isinstance(item, np.ndarray):
            names.append(f"array[{i}]")
            images.append(item)
        elif isinstance(item, (str, Path)):
            names.append(str(item))
            images.append(str(item))
        else:
            raise TypeError(f"predict input {i}: expected an image path or an (H, W, 3) uint8 RGB array, "
                            f"got {type(item).__name__}")
    return names, images


def _load_pyfunc(data_path: str) -> RegisteredDetector:
    """MLflow's loader-module entry point: the registered detector in `data_path` (the folder written above)."""
    return RegisteredDetector(data_path)
