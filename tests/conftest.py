"""Shared fixtures: an isolated Prefect home with a test harness, and tiny built-in projects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MGRAL_MAX_WORKERS", "2")

REPO = Path(__file__).resolve().parents[1]


def load_bench_script(name: str):
    """bench/<name>.py as a module (the bench scripts are not a package), for tests of their pieces.

    bench/ goes on sys.path, as `python bench/<name>.py` puts it there, for the scripts' shared helpers.
    """
    import importlib.util
    import sys

    if str(REPO / "bench") not in sys.path:
        sys.path.append(str(REPO / "bench"))

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

TINY = {
    "dataset": {"seed": 0, "image_size": 64, "n_pool": 60, "n_val": 16, "n_test": 16},
    "simulation": {"initial_labeled": 20, "seed": 0},
    "detector": {"imgsz": 64, "epochs": 2, "finetune_epochs": 1, "batch": 16, "workers": 0, "cache": False},
    "selection": {"strategy": "random", "budget": 8},
    "campaign": {"cycles": 3},
    "lookup_table": {"records": 3, "epochs": 1},
    "agent": {"iterations": 5},
}


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):  # minutes on a loaded 2-core machine
        yield


def write_params(path: Path, **overrides) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        data[section] = {**data[section], **values}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """A tiny simulation project made once per session; tests copy it."""
    from mgral_workspace.project import init_from_synthetic
    from mgral_workspace.synthetic import SyntheticSpec

    root = tmp_path_factory.mktemp("template")
    d = TINY["dataset"]
    init_from_synthetic(root / "project", SyntheticSpec(seed=0, image_size=d["image_size"], n_pool=d["n_pool"],
                                                        n_val=d["n_val"], n_test=d["n_test"]),
                        initial_labeled=TINY["simulation"]["initial_labeled"])
    write_params(root / "project" / "params.yaml")
    return root / "project"


@pytest.fixture
def tiny_project(tiny_template, tmp_path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(tiny_template, target, symlinks=True)
    return target
