"""Edge cases of a cycle: budget larger than the pool, an empty pool, a bad params file, no detections."""

import numpy as np
import pytest
import yaml

from flows.cycle import mgral_cycle
from mgral_workspace.config import ConfigError
from mgral_workspace.pool import PoolState
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_budget_larger_than_pool_selects_everything(tiny_project, prefect_harness):
    write_params(tiny_project / "params.yaml", selection__budget=500, selection__strategy="coreset",
                 tracking__version_pool=False)
    result = mgral_cycle(str(tiny_project))
    assert len(result["selected"]) == 40
    assert PoolState.load(tiny_project).counts()["unlabeled"] == 0
    again = mgral_cycle(str(tiny_project))  # now the pool is empty: train and evaluate, select nothing
    assert again["selected"] == [] and again["labeled"] == 60


def test_invalid_params_file_names_the_key(tiny_project, prefect_harness):
    data = yaml.safe_load((tiny_project / "params.yaml").read_text())
    data["agent"]["baseline_decay"] = 3
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(data))
    before = (tiny_project / "pool.csv").read_bytes()
    with pytest.raises(ConfigError, match="agent.baseline_decay"):
        mgral_cycle(str(tiny_project))
    assert (tiny_project / "pool.csv").read_bytes() == before


def test_class_absent_from_labeled_set_and_empty_detections(tiny_project, prefect_harness):
    """The tiny detector finds (almost) nothing; rare classes are absent from the labeled set: still runs."""
    pool = PoolState.load(tiny_project)
    labeled_classes = set()
    for label in pool.table.loc[pool.table["labeled"] & (pool.table["split"] == "pool"), "label_file"]:
        path = tiny_project / label  # remove hexagons (class 7) from the labeled set by construction
        lines = [line for line in path.read_text().splitlines() if line.split() and line.split()[0] != "7"]
        path.write_text("".join(f"{line}\n" for line in lines))
        labeled_classes |= {int(line.split()[0]) for line in lines}
    assert 7 not in labeled_classes
    write_params(tiny_project / "params.yaml", selection__strategy="entropy_max", tracking__version_pool=False)
    result = mgral_cycle(str(tiny_project))
    assert len(result["selected"]) == 8
    test_labels = pool.table.loc[pool.table["split"] == "test", "label_file"]
    hexagons_in_test = any(line.split()[0] == "7" for label in test_labels
                           for line in (tiny_project / label).read_text().splitlines() if line.split())
    hexagon_ap = result["per_class"]["hexagon"]  # NaN only when the test split has no hexagon
    assert (0.0 <= hexagon_ap <= 1.0) if hexagons_in_test else np.isnan(hexagon_ap)
