"""Detector backends behind one protocol (`protocol.DetectorBackend`); `get_backend` builds the configured one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mgral_backends.protocol import (
    SERVING_COLUMNS,
    DetectorBackend,
    DetectorError,
    ServingModel,
    TrainedDetector,
    TrainingDiverged,
    serving_frame,
)

if TYPE_CHECKING:
    from mgral_workspace.config import DetectorParams

DEFAULT_BACKEND = "ultralytics"


def _ultralytics(params: DetectorParams) -> DetectorBackend:
    from mgral_backends.ultralytics.backend import UltralyticsBackend  # imports torch and Ultralytics

    return UltralyticsBackend(params)


BACKENDS: dict[str, Callable[[DetectorParams], DetectorBackend]] = {
    "ultralytics": _ultralytics,
}


def get_backend(params: DetectorParams, name: str | None = None) -> DetectorBackend:
    """The backend `name` (default: `params.backend`, i.e. detector.backend in params.yaml) built from the
    detector section of params.yaml.

    Raises:
        ValueError: `name` is not a key of BACKENDS.
    """
    name = name or getattr(params, "backend", DEFAULT_BACKEND)
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown detector backend {name!r}; known backends: {', '.join(BACKENDS)}") from None
    return factory(params)


__all__ = ["BACKENDS", "SERVING_COLUMNS", "DetectorBackend", "DetectorError", "ServingModel", "TrainedDetector",
           "TrainingDiverged", "get_backend", "serving_frame"]
