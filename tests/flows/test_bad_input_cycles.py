"""Whole cycles on unusual but valid data: a single-class project."""

import math

import pytest
import yaml

from flows.cycle import mgral_cycle
from mgral_workspace.pool import PoolState
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_single_class_project_runs_a_cycle(tiny_project, prefect_harness):
    for folder in ("labels", "oracle/labels"):  # every shape becomes the one class "shape"
        for label in (tiny_project / folder).glob("*.txt"):
            lines = [line.split() for line in label.read_text().splitlines() if line.strip()]
            label.write_text("".join(" ".join(["0", *parts[1:]]) + "\n" for parts in lines))
    info = yaml.safe_load((tiny_project / "project.yaml").read_text())
    (tiny_project / "project.yaml").write_text(yaml.safe_dump({**info, "class_names": ["shape"]}))
    write_params(tiny_project / "params.yaml", selection__strategy="entropy_sum", tracking__version_pool=False)
    result = mgral_cycle(str(tiny_project))
    assert list(result["per_class"]) == ["shape"] and math.isfinite(result["map50_95"])
    assert len(result["selected"]) == 8
    assert len(PoolState.load(tiny_project).labeled_pool_ids) == 20 + 8
