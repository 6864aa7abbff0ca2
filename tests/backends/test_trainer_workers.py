"""`detector.workers_on_cpu`: the training DataLoader keeps its worker processes on the CPU; off, Ultralytics zeroes them.
`detector.threads`: torch's thread count through a training, against Ultralytics' cores - 1."""

import os

import pytest

from mgral_backends.ultralytics.detector import train_detector, write_data_yaml
from mgral_backends.ultralytics.trainer import WorkersOnCpuTrainer, detection_trainer, training_threads
from mgral_workspace.config import DetectorParams
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info


def test_a_daemonic_process_trains_with_the_stock_loader(monkeypatch, caplog):
    import multiprocessing

    params = DetectorParams(workers_on_cpu=True)
    assert detection_trainer(params) is WorkersOnCpuTrainer
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    assert detection_trainer(params) is None  # a Dask worker may not fork DataLoader workers
    assert "daemonic process" in caplog.text
    assert detection_trainer(DetectorParams(workers_on_cpu=False)) is None


@pytest.mark.slow
def test_workers_on_cpu_keeps_the_loader_workers(tiny_project, tmp_path, monkeypatch):
    from ultralytics.utils.callbacks import base

    import torch

    seen, threads = [], []
    monkeypatch.setitem(base.default_callbacks, "on_train_epoch_end",
                        [*base.default_callbacks["on_train_epoch_end"],
                         lambda trainer: seen.append((type(trainer).__name__, trainer.train_loader.num_workers))])
    monkeypatch.setitem(base.default_callbacks, "on_train_batch_end",  # after the held count is set (or not)
                        [*base.default_callbacks["on_train_batch_end"],
                         lambda trainer: threads.append(torch.get_num_threads())])
    pool, info = PoolState.load(tiny_project), load_project_info(tiny_project)
    data = write_data_yaml(tmp_path / "data.yaml", [tiny_project / f for f in pool.files(pool.labeled_pool_ids)],
                           [tiny_project / f for f in pool.files(pool.ids("val"))], info.class_names)
    for keep in (False, True):
        params = DetectorParams(imgsz=64, batch=4, workers=2, cache=False, workers_on_cpu=keep, threads=None)
        assert detection_trainer(params) is (WorkersOnCpuTrainer if keep else None)
        trained = train_detector(data, tmp_path / f"keep_{keep}", params, epochs=1)
        assert trained.weights.exists()
    # 20 labeled images in batches of 4: five batches, so Ultralytics' own cap leaves both workers
    assert seen == [("DetectionTrainer", 0), ("WorkersOnCpuTrainer", 2)]
    assert set(threads) == {max(1, os.cpu_count() - 1)}  # Ultralytics' choice when detector.threads is null

    threads.clear()
    torch.set_num_threads(1)
    held = DetectorParams(imgsz=64, batch=4, cache=False, workers_on_cpu=False, threads=3)
    assert training_threads(held) == 3 and training_threads(DetectorParams(threads=0)) == os.cpu_count()
    assert train_detector(data, tmp_path / "threads", held, epochs=1).weights.exists()
    assert threads and set(threads) == {3}  # held through every batch, despite select_device
    assert torch.get_num_threads() == 1  # and the process's own count put back
