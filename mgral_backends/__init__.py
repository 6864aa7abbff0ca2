"""Detector backends behind one protocol (`protocol.DetectorBackend`); `get_backend` builds the configured one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mgral_backends.protocol import DetectorBackend
    from mgral_workspace.config import DetectorParams

# The protocol's names, imported on first use: the protocol needs numpy and pandas, and commands that only
# check params.yaml's backend name against BACKENDS (`mgral status`) should start without them.
_PROTOCOL = ("SERVING_COLUMNS", "DetectorBackend", "DetectorError", "ServingModel", "TrainedDetector",
             "TrainingDiverged", "serving_frame")


def __getattr__(name: str) -> Any:
    if name in _PROTOCOL:
        from mgral_backends import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module 'mgral_backends' has no attribute {name!r}")

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
