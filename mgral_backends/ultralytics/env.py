"""Make Ultralytics fully offline and quiet before it is imported anywhere in MGRAL.

Ultralytics reads YOLO_OFFLINE / YOLO_CONFIG_DIR at import time and, left alone, tries to
sync settings, fetch fonts and register its own MLflow/DVC callbacks. Import this module
(never `ultralytics` directly) from the rest of the core.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path.home() / ".cache" / "mgral" / "ultralytics"))
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # never pip-install anything at run time
Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)

import ultralytics  # noqa: E402
from ultralytics.utils import SETTINGS  # noqa: E402

_OFF = {
    "sync": False,
    "mlflow": False,
    "dvc": False,
    "clearml": False,
    "comet": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}
if any(SETTINGS.get(key) != value for key, value in _OFF.items()):
    SETTINGS.update(_OFF)
logging.getLogger("ultralytics").setLevel(logging.WARNING)

YOLO = ultralytics.YOLO
