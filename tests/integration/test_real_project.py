"""Helpers for real-labeling projects used by the integration tests (no tests of its own)."""

from pathlib import Path

from mgral_formats import load_dataset
from mgral_workspace.project import init_project
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset
from tests.conftest import write_params


def make_real_project(tmp_path: Path, labeled: int = 16) -> Path:
    """A 40-image real-use project (labeled pool images first, the rest unlabeled) with tiny params."""
    data = generate_dataset(SyntheticSpec(seed=1, image_size=64, n_pool=40, n_val=12, n_test=12), tmp_path / "data")
    for label in sorted((data / "labels" / "train").glob("*.txt"))[labeled:]:
        label.unlink()
    dataset, _ = load_dataset(data)
    project = init_project(tmp_path / "project", dataset, simulate=False, initial_labeled=0)
    write_params(project / "params.yaml", selection__strategy="entropy_sum", tracking__version_pool=False)
    return project
