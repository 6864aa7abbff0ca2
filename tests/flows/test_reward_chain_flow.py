"""A cycle with the table's diagnostics on measures the reward chain (links a-e): MLflow metrics, a per-cycle
table, and the same selection as without it (the chain reads the oracle only after the batch is saved)."""

import json
import shutil

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.cycle import mgral_cycle
from mgral_backends import BACKENDS
from mgral_workspace.lookup_store import load_table
from tests.backends.fake_detector import FakeDetectorBackend, _rng
from tests.conftest import write_params

pytestmark = pytest.mark.slow  # a Prefect flow run (seconds with the fake detector)


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, "fake", lambda params: FakeDetectorBackend(imgsz=64))


def test_chain_is_logged_and_written_and_changes_no_selection(tiny_project, tmp_path, fake_backend, prefect_harness):
    settings = {"detector__backend": "fake", "tracking__version_pool": False, "selection__strategy": "mgral",
                "lookup_table__records": 6, "lookup_table__batch_sampling": "designed", "oracle__candidates": 11,
                "agent__iterations": 3}
    twin = tmp_path / "twin"
    shutil.copytree(tiny_project, twin, symlinks=True)
    write_params(tiny_project / "params.yaml", lookup_table__diagnostics=True, **settings)
    write_params(twin / "params.yaml", lookup_table__diagnostics=False, **settings)
    result, without = mgral_cycle(str(tiny_project)), mgral_cycle(str(twin))
    assert result["selected"] == without["selected"] and len(result["selected"]) == 8
    assert not (twin / "cycles" / "cycle_001" / "reward_chain.csv").exists()

    cycle = tiny_project / "cycles" / "cycle_001"
    records = [r for r in load_table(cycle / "lookup_table") if not r.is_fallback]
    assert [r.extras["kind"] for r in records] == ["proposal"] * 4 + ["random"] * 2  # 6: 2 random (0.25 x 6)
    assert [r.extras["source"] for r in records[:4]] == [  # every baseline but random, in order
        "entropy_mean", "entropy_sum", "entropy_max", "least_confidence"]
    rows = pd.read_csv(cycle / "reward_chain.csv")
    assert list(dict.fromkeys(rows["link"])) == ["a", "b", "c", "d", "e"]
    figures = json.loads((cycle / "reward_chain.json").read_text())
    assert figures["records"] == 6 and figures["batch_sampling"] == "designed" and 2 <= figures["diverse_batches"] <= 11
    selected = sorted(result["selected"])  # the fake proxy's true-label value of the selected batch
    assert figures["mgral_true"] == pytest.approx(_rng("record", selected, (0, 1), False).uniform())
    batches = pd.read_csv(cycle / "reward_chain_batches.csv")
    assert (batches["role"] == "table").sum() == 6 and (batches["role"] == "selected").sum() == 1
    assert (batches["role"] == "diverse").sum() == figures["diverse_batches"]
    assert figures["ceiling_true"] == pytest.approx(batches.loc[batches["role"] == "diverse", "true_value"].max())
    assert "Reward chain, cycle 1 (designed table, 6 records" in (cycle / "reward_chain.md").read_text()

    client = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    run = client.get_run(result["run_id"])
    for name in ("fidelity_diverse", "loo_spearman", "mgral_true", "ceiling_true", "agent_final_reward"):
        if figures[name] is not None:
            assert run.data.metrics[f"chain_{name}"] == pytest.approx(figures[name])
    assert run.data.metrics["chain_targets_checked"] >= 2
    assert {"mgral/reward_chain.md", "mgral/reward_chain.csv"} <= {a.path for a in client.list_artifacts(
        result["run_id"], "mgral")}


def test_expected_objects_table_trains_nothing_and_values_each_record_by_its_detections(tiny_project, fake_backend,
                                                                                        prefect_harness):
    """lookup_table.value: expected_objects: a cycle's records are the detector's expected objects per image of
    their batches (from the cycle's pool inference), no head features are cached, and MGRAL still selects."""
    import numpy as np

    from mgral_core.detections import expected_objects
    from mgral_workspace.inference_cache import load_inference

    write_params(tiny_project / "params.yaml", detector__backend="fake", tracking__version_pool=False,
                 selection__strategy="mgral", lookup_table__records=5, lookup_table__value="expected_objects",
                 lookup_table__diagnostics=False, agent__iterations=3, agent__advantage="normalized")
    result = mgral_cycle(str(tiny_project))
    assert len(result["selected"]) == 8
    cycle = tiny_project / "cycles" / "cycle_001"
    assert not (cycle / "lookup_table" / "head_features.pt").exists()
    detections = load_inference(cycle / "pool_inference.npz").detections_by_id()
    records = [r for r in load_table(cycle / "lookup_table") if not r.is_fallback]
    assert len(records) == 5
    values = [r.value for r in records]
    assert values == pytest.approx([expected_objects([detections[i] for i in r.batch_ids.tolist()], 0.05)
                                    for r in records])
    assert np.std(values) > 0  # the fake detector's batches differ in what they hold


def test_exact_reward_values_every_drawn_batch_by_its_detections(tiny_project, fake_backend, prefect_harness):
    """reward.estimator: exact with lookup_table.value: class_gain: the agent's rewards are the class gain of the
    batches it drew, nothing falls back to training, and best_sampled hands out the best of them or the top-k;
    the reward chain (diagnostics on) measures such a cycle like any other."""
    import numpy as np

    from mgral_core.detections import DetectionValue
    from mgral_workspace.config import load_params
    from mgral_workspace.cycle_steps import ground_truth
    from mgral_workspace.inference_cache import load_inference
    from mgral_workspace.pool import PoolState
    from mgral_workspace.project import load_project_info

    write_params(tiny_project / "params.yaml", detector__backend="fake", tracking__version_pool=False,
                 selection__strategy="mgral", lookup_table__records=5, lookup_table__value="class_gain",
                 lookup_table__diagnostics=True, reward__estimator="exact", agent__iterations=4,
                 agent__advantage="normalized", agent__final_choice="best_sampled")
    params = load_params(tiny_project / "params.yaml")
    result = mgral_cycle(str(tiny_project))
    assert len(result["selected"]) == 8
    cycle = tiny_project / "cycles" / "cycle_001"
    summary = json.loads((cycle / "mgral_summary.json").read_text())
    history = json.loads((cycle / "agent_history.json").read_text())
    assert summary["reward_exact"] == 1.0 and summary["lookup_fallbacks"] == 0
    assert summary["agent_best_drawn_reward"] == pytest.approx(max(history["rewards"]))
    assert summary["final_choice_estimate"] >= summary["agent_best_drawn_reward"] - 1e-12
    # the batch handed out is worth what the agent was told: its class gain over L as it was before the
    # oracle labeled the selection, from the cycle's pool inference
    pool = PoolState.load(tiny_project)
    before = [i for i in pool.labeled_pool_ids.tolist() if i not in set(result["selected"])]
    num_classes = len(load_project_info(tiny_project).class_names)
    labeled = np.zeros(num_classes)
    for _, classes in ground_truth(tiny_project, pool, before).values():
        np.add.at(labeled, np.asarray(classes, np.int64), 1.0)
    value = DetectionValue(load_inference(cycle / "pool_inference.npz").detections_by_id(), "class_gain",
                           params.lookup_table.expected_floor, num_classes, labeled)
    assert value(result["selected"]) == pytest.approx(summary["final_choice_estimate"])
    records = [r for r in load_table(cycle / "lookup_table") if not r.is_fallback]
    assert len(records) == 5 and np.std([r.value for r in records]) > 0
    assert [r.value for r in records] == pytest.approx([value(r.batch_ids) for r in records])
    figures = json.loads((cycle / "reward_chain.json").read_text())
    assert figures["records"] == 5 and figures["mgral_true"] is not None
    run = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}").get_run(result["run_id"])
    assert any(name.endswith("reward_exact") and value == 1.0 for name, value in run.data.metrics.items())
