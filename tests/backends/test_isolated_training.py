"""`detector.isolate`: a detector trained in a fresh process is the same whatever other threads of the caller do.

Inside Prefect and Dask, threads of the caller draw from Python's global `random` while Ultralytics trains
from it (measured: six such draws in one fine-tune inside a Prefect task), so the same training gave
another detector on every run. Here a thread draws from `random` the whole time.
"""

import random
import threading

import pytest
import torch

from mgral_backends.ultralytics.detector import load_detection_model, train_detector, write_data_yaml
from mgral_backends.ultralytics.isolated import train_detector_isolated
from mgral_workspace.config import DetectorParams
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import yaml

    root = generate_dataset(SyntheticSpec(seed=3, image_size=64, n_pool=16, n_val=4, n_test=4),
                            tmp_path_factory.mktemp("isolated") / "data")
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    return write_data_yaml(root.parent / "run" / "data.yaml", sorted((root / "images" / "train").glob("*.png")),
                           sorted((root / "images" / "val").glob("*.png")), list(names.values()))


def parameters(weights) -> list[torch.Tensor]:
    return [t.detach().clone() for t in load_detection_model(weights).state_dict().values()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_an_isolated_training_ignores_the_callers_threads(data, tmp_path):
    params = DetectorParams(imgsz=64, batch=8, cache=False, threads=1)
    quiet = parameters(train_detector(data, tmp_path / "in_process", params, epochs=2, seed=4).weights)
    stop = threading.Event()

    def draw() -> None:  # as Prefect's event-loop thread does, only more often
        while not stop.is_set():
            random.getrandbits(32)

    noisy = threading.Thread(target=draw, daemon=True)
    noisy.start()
    try:
        isolated = train_detector_isolated(data, tmp_path / "isolated", params, epochs=2, seed=4)
        disturbed = parameters(train_detector(data, tmp_path / "disturbed", params, epochs=2, seed=4).weights)
    finally:
        stop.set()
        noisy.join()
    assert isolated.weights == tmp_path / "isolated" / "best.pt" and isolated.epochs == 2
    assert same(parameters(isolated.weights), quiet)  # bit for bit the quiet in-process training
    assert not same(disturbed, quiet)  # what in-process training does beside such a thread
    assert sorted(p.name for p in (tmp_path / "isolated").iterdir()) == ["best.pt", "ultralytics"]
