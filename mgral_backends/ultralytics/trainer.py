"""Which Ultralytics trainer class MGRAL trains with: the stock one, or one that keeps DataLoader workers on CPU."""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

from mgral_backends.ultralytics import env  # noqa: F401  (offline settings before ultralytics is imported)
from mgral_workspace.config import DetectorParams

import torch  # noqa: E402
from ultralytics.cfg import DEFAULT_CFG, get_cfg  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402


class WorkersOnCpuTrainer(DetectionTrainer):
    """Ultralytics' DetectionTrainer with `workers` honoured on the CPU.

    `BaseTrainer.__init__` sets `args.workers = 0` when the device is the CPU ("time dominated by
    inference, not dataloading"), so augmentation runs in the training process between compute
    steps. This trainer puts the requested count back right after, before any DataLoader is built;
    nothing else changes. Ultralytics still caps the workers at the CPU count and the number of
    batches (`ultralytics.data.build.build_dataloader`).
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        requested = get_cfg(cfg, overrides).workers
        super().__init__(cfg, overrides, _callbacks)
        self.args.workers = requested


log = logging.getLogger(__name__)


def detection_trainer(params: DetectorParams) -> type[DetectionTrainer] | None:
    """The trainer class for `YOLO.train(trainer=...)`: None (Ultralytics' own) unless `workers_on_cpu` is set.

    A daemonic process (a Dask worker, by distributed's default) may not start DataLoader workers,
    so there Ultralytics' own in-process loading is used, and logged.
    """
    if not params.workers_on_cpu:
        return None
    if multiprocessing.current_process().daemon:
        log.warning("detector.workers_on_cpu: this is a daemonic process (e.g. a Dask worker), which may not start "
                    "DataLoader workers; loading in the training process instead")
        return None
    return WorkersOnCpuTrainer


def training_threads(params: DetectorParams) -> int | None:
    """The torch threads a training uses on the CPU (`detector.threads`): None = leave Ultralytics' choice."""
    if params.threads is None or str(params.device) != "cpu":
        return None
    return params.threads or os.cpu_count() or 1


def keep_training_threads(model, threads: int | None) -> None:
    """Hold torch at `threads` threads through a YOLO training, its validations included.

    Ultralytics' `select_device` sets `torch.set_num_threads(cores - 1)` whenever a trainer or a
    stand-alone validator picks the CPU, so the count is set again at each point where that may have
    happened: the trainer's start and each validation's start. The caller puts the process's count back
    afterwards.
    """
    if threads is None:
        return

    def hold(_) -> None:
        torch.set_num_threads(threads)

    for event in ("on_pretrain_routine_start", "on_train_start", "on_val_start"):
        model.add_callback(event, hold)
