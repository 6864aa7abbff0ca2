"""`detector.workers_on_cpu`: the training DataLoader keeps its worker processes on the CPU; off, Ultralytics zeroes them."""

import pytest

from mgral_backends.ultralytics.detector import train_detector, write_data_yaml
from mgral_backends.ultralytics.trainer import WorkersOnCpuTrainer, detection_trainer
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

    seen = []
    monkeypatch.setitem(base.default_callbacks, "on_train_epoch_end",
                        [*base.default_callbacks["on_train_epoch_end"],
                         lambda trainer: seen.append((type(trainer).__name__, trainer.train_loader.num_workers))])
    pool, info = PoolState.load(tiny_project), load_project_info(tiny_project)
    data = write_data_yaml(tmp_path / "data.yaml", [tiny_project / f for f in pool.files(pool.labeled_pool_ids)],
                           [tiny_project / f for f in pool.files(pool.ids("val"))], info.class_names)
    for keep in (False, True):
        params = DetectorParams(imgsz=64, batch=4, workers=2, cache=False, workers_on_cpu=keep)
        assert detection_trainer(params) is (WorkersOnCpuTrainer if keep else None)
        trained = train_detector(data, tmp_path / f"keep_{keep}", params, epochs=1)
        assert trained.weights.exists()
    # 20 labeled images in batches of 4: five batches, so Ultralytics' own cap leaves both workers
    assert seen == [("DetectionTrainer", 0), ("WorkersOnCpuTrainer", 2)]
