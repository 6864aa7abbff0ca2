"""`UltralyticsBackend`: the `DetectorBackend` protocol over Ultralytics YOLO, built from `DetectorParams`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mgral_backends.protocol import DetectorError, ServingModel, TrainedDetector
from mgral_backends.ultralytics.detector import load_detection_model, predict_images, train_detector, write_data_yaml
from mgral_backends.ultralytics.isolated import train_detector_isolated
from mgral_backends.ultralytics.pretrained import resolve_pretrained, yolo_with_pretrained
from mgral_backends.ultralytics.serving import write_serving_model
from mgral_backends.ultralytics.proxy_training import (
    HeadFeatures,
    HeadProxy,
    HeadTuneConfig,
    Targets,
    cache_head_features,
)
from mgral_core.detections import Detections
from mgral_workspace.config import DetectorParams


class UltralyticsBackend:
    """YOLO training, inference and head features with the settings of params.yaml's detector section.

    Args:
        params: the detector section; the backend reads imgsz, predict_conf, embed_batch and device
            for inference, and hands the whole section to `train_detector` for training.

    Head features and the head proxy run on the CPU whatever `device` says: the proxy fine-tunes
    a copy of the head there.
    """

    def __init__(self, params: DetectorParams):
        self.params = params

    def train(self, train_images: Sequence[str | Path], val_images: Sequence[str | Path],
              class_names: Sequence[str], out_dir: Path, *, epochs: int, init_weights: Path | None = None,
              seed: int | None = None) -> TrainedDetector:
        """Write `out_dir/data.yaml` for the two image lists, then `detector.train_detector` into `out_dir`
        (in a fresh process unless `detector.isolate` is false: `isolated.train_detector_isolated`)."""
        data_yaml = write_data_yaml(Path(out_dir) / "data.yaml", train_images, val_images, class_names)
        train = train_detector_isolated if self.params.isolate else train_detector
        return train(data_yaml, out_dir, self.params, epochs=epochs, init_weights=init_weights, seed=seed)

    def predict(self, weights: str | Path, paths: Sequence[str | Path], *, want_embeddings: bool = True,
                progress: Callable[[int], None] | None = None) -> tuple[list[Detections], np.ndarray | None]:
        """`detector.predict_images` at the configured imgsz, confidence floor, batch and device."""
        p = self.params
        return predict_images(weights, paths, imgsz=p.imgsz, conf=p.predict_conf, batch=p.embed_batch,
                              device=p.device, want_embeddings=want_embeddings, progress=progress)

    def start_weights(self, out_dir: Path) -> Path | None:
        """`detector.model` when it is a .pt; else the yaml with `detector.pretrained`'s layers (the head
        fresh), saved once as `out_dir/pretrained_start.pt`; None when `detector.pretrained` is null."""
        p = self.params
        if p.model.endswith(".pt"):
            if not Path(p.model).is_file():
                raise DetectorError(f"detector.model: {p.model} does not exist; MGRAL never downloads weights")
            return Path(p.model)
        pretrained = resolve_pretrained(p.pretrained)
        if pretrained is None:
            return None
        target = Path(out_dir) / "pretrained_start.pt"
        if not target.exists():
            yolo = yolo_with_pretrained(p.model, pretrained)
            yolo.model.nc = int(yolo.model.yaml["nc"])  # what a trained checkpoint carries and predict reads
            yolo.model.names = {i: f"class{i}" for i in range(yolo.model.nc)}
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            yolo.save(tmp)
            tmp.replace(target)
        return target

    def serving_model(self, weights: str | Path, class_names: Sequence[str], out_dir: Path) -> ServingModel:
        """`serving.write_serving_model`: the .pt, the inference settings of `predict` and the code, in `out_dir`."""
        return write_serving_model(weights, class_names, self.params, Path(out_dir))

    def head_features(self, weights: str | Path, paths: Sequence[str | Path], ids: Sequence[str], *,
                      progress: Callable[[int], None] | None = None) -> HeadFeatures:
        """`proxy_training.cache_head_features` of `weights` at the configured imgsz (float16 features)."""
        return cache_head_features(load_detection_model(weights), paths, ids, imgsz=self.params.imgsz,
                                   progress=progress)

    def head_proxy(self, weights: str | Path, features: HeadFeatures, labeled: Mapping[str, Targets],
                   val: Mapping[str, Targets], config: HeadTuneConfig) -> HeadProxy:
        """A `proxy_training.HeadProxy` over the head of `weights`; `features` must cover L and val."""
        return HeadProxy(load_detection_model(weights), features, labeled, val, config)
