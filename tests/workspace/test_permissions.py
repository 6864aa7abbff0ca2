"""What MGRAL writes gets the modes the umask allows (before: 0600 files and a 0700 project root from
mkstemp/mkdtemp, which shut out the Dask workers and the team sharing the storage)."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgral_core.detections import Detections
from mgral_formats import load_dataset
from mgral_workspace.atomic import write_text_atomic
from mgral_workspace.batch_export import export_batch
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project
from mgral_workspace.project_lock import project_lock
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dataset(root: Path) -> Path:
    for i in range(6):
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (i * 20, 90, 90)).save(root / "images" / "train" / f"t{i}.png")
        if i < 4:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"t{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("names: [a]\ntrain: images/train\n")
    return root


@pytest.mark.parametrize("umask", [0o022, 0o002], indirect=True)
def test_project_files_and_folders_follow_the_umask(tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    dataset, report = load_dataset(_dataset(tmp_path / "ds"))
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report)
    assert _mode(project) == dir_mode
    for path in (project / "pool.csv", project / "project.yaml", project / "quarantine" / "import_report.txt",
                 next((project / "images").iterdir())):
        assert _mode(path) == file_mode, path
    assert _mode(project / "images") == dir_mode

    pool = PoolState.load(project)
    pool.save(project)  # an atomic rewrite (mkstemp underneath) keeps the umask's mode
    assert _mode(project / "pool.csv") == file_mode
    os.chmod(project / "pool.csv", 0o640)  # a mode the user chose survives the next rewrite
    pool.save(project)
    assert _mode(project / "pool.csv") == 0o640

    ids = pool.unlabeled_pool_ids.tolist()
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    out = export_batch(project, 1, ids, {i: empty for i in ids}, ["a"], "test")
    assert _mode(out) == dir_mode and _mode(out / "images.txt") == file_mode

    write_text_atomic(tmp_path / "new.txt", "x")
    assert _mode(tmp_path / "new.txt") == file_mode
    with project_lock(project, "test"):
        assert _mode(project / ".mgral.lock") == file_mode

    data = generate_dataset(SyntheticSpec(seed=0, image_size=32, n_pool=10, n_val=5, n_test=5), tmp_path / "gen")
    assert _mode(data) == dir_mode and _mode(data / "data.yaml") == file_mode
