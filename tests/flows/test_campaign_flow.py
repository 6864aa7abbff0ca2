"""A simulated campaign of 3 cycles runs through the Prefect flows and lands in MLflow (random, MGRAL, the
ceiling); every other baseline selects through the same cycle flow from one shared cycle-1 detector."""

import json
import shutil

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flows.campaign import mgral_campaign
from flows.cycle import mgral_cycle
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import infer_pool, train_cycle_detector
from mgral_workspace.pool import PoolState
from mgral_core.strategies import BASELINE_STRATEGIES
from tests.conftest import write_params

pytestmark = pytest.mark.slow

CAMPAIGN_STRATEGIES = ["random", "mgral", "oracle_best_of_n"]


@pytest.mark.parametrize("strategy", CAMPAIGN_STRATEGIES)
def test_three_cycle_campaign_is_tracked(strategy, tiny_project, prefect_harness):
    if strategy == "mgral":  # hierarchical selection on: the agent reads a shortlist of 24 of the 40 candidates
        write_params(tiny_project / "params.yaml", agent__shortlist=24)
    if strategy == "oracle_best_of_n":  # the real head proxy with true labels: keep the candidates few
        write_params(tiny_project / "params.yaml", oracle__candidates=10, lookup_table__head_epochs=2)
    result = mgral_campaign(str(tiny_project), cycles=3, strategy=strategy)
    pool = PoolState.load(tiny_project)
    assert pool.counts()["labeled"] == 20 + 3 * 8
    assert [p["labeled"] for p in result["points"]] == [20, 28, 36, 44]
    for cycle in (1, 2, 3):  # every batch went through the oracle and is recorded with its cycle
        ids = json.loads((tiny_project / "cycles" / f"cycle_{cycle:03d}" / "selection.json").read_text())["ids"]
        rows = pool.table.set_index("image_id").loc[ids]
        assert len(ids) == 8 and rows["labeled"].all() and (rows["labeled_cycle"] == cycle).all()
    client = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"mgral-{tiny_project.name}")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "campaign"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 4
    assert client.search_registered_models() == []  # a campaign's cycles are not registered detectors
    history = client.get_metric_history(parent[0].info.run_id, "test_map50_95")
    assert sorted(m.step for m in history) == [20, 28, 36, 44]
    first = next(r for r in children if r.data.tags["cycle"] == "1")
    assert "test_map50" in first.data.metrics and "val_map50_95" in first.data.metrics
    artifacts = {a.path for a in client.list_artifacts(first.info.run_id)}
    assert {"detector", "selected_ids.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(first.info.run_id, "plots")}
    assert {"plots/selected_classes.png", "plots/selected_grid.png"} <= plots
    assert (tiny_project / "cycles" / "cycle_001" / "selected_grid.png").stat().st_size > 2000
    assert (tiny_project / "reports" / "learning_curve.png").stat().st_size > 1000
    metrics = json.loads((tiny_project / "reports" / "metrics.json").read_text())
    assert metrics["final_labeled"] == 44 and metrics["strategy"] == strategy
    if strategy == "mgral":
        mgral_artifacts = {a.path for a in client.list_artifacts(first.info.run_id, "mgral")}
        assert {"mgral/agent.pt", "mgral/lookup_table.csv"} <= mgral_artifacts
        assert "agent_reward" in first.data.metrics and first.data.metrics["lookup_records"] >= 3
        assert first.data.metrics["agent_candidates_read"] == 24
    if strategy == "oracle_best_of_n":
        assert "mgral/candidates.json" in {a.path for a in client.list_artifacts(first.info.run_id, "mgral")}
        scored = json.loads((tiny_project / "cycles" / "cycle_001" / "oracle_ceiling" / "candidates.json").read_text())
        assert len(scored["candidates"]) == 10 and first.data.metrics["oracle_chosen_value"] == max(
            c["value"] for c in scored["candidates"])


@pytest.fixture(scope="module")
def trained_cycle_1(tiny_template, tmp_path_factory) -> Path:
    """The tiny project with its cycle-1 detector trained and the pool inferred, once for the baselines below."""
    project = tmp_path_factory.mktemp("trained_cycle_1") / "project"
    shutil.copytree(tiny_template, project, symlinks=True)
    params = load_params(project / "params.yaml")
    detector = train_cycle_detector(project, params, 1)
    infer_pool(project, detector.weights, params.detector, 1)
    return project


@pytest.mark.parametrize("strategy", sorted(set(BASELINE_STRATEGIES) - set(CAMPAIGN_STRATEGIES)))
def test_every_baseline_selects_through_the_cycle_flow(strategy, trained_cycle_1, tmp_path, prefect_harness):
    """Each baseline's cycle on the real detector: its batch is labeled by the oracle, recorded with the cycle and
    tracked, as in the campaigns above (which cover the campaign's own bookkeeping)."""
    project = tmp_path / "project"
    shutil.copytree(trained_cycle_1, project, symlinks=True)
    trained = project / "cycles" / "cycle_001" / "detector" / "trained.json"
    weights = trained.parent / "best.pt"
    assert json.loads(trained.read_text())["weights"] == "best.pt"  # relative: the copy uses its own weights
    weights_mtime = weights.stat().st_mtime_ns
    before = PoolState.load(project).table.set_index("image_id")
    result = mgral_cycle(str(project), strategy=strategy)
    assert weights.stat().st_mtime_ns == weights_mtime  # the shared detector, not retrained
    ids = json.loads((project / "cycles" / "cycle_001" / "selection.json").read_text())["ids"]
    assert result["selected"] == ids and len(set(ids)) == 8 and result["strategy"] == strategy
    assert not before.loc[ids, "labeled"].any() and before.loc[ids, "split"].eq("pool").all()
    rows = PoolState.load(project).table.set_index("image_id").loc[ids]
    assert rows["labeled"].all() and (rows["labeled_cycle"] == 1).all()
    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(result["run_id"])
    assert run.data.tags["cycle"] == "1" and run.data.tags["strategy"] == strategy
    assert "test_map50_95" in run.data.metrics
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(run.info.run_id)}
    assert {"detector", "selected_ids.json", "plots"} <= artifacts


def test_selection_never_reads_the_oracle(trained_cycle_1, tmp_path, prefect_harness):
    """Corrupting the hidden labels of the pool does not change what a strategy selects (with the real detector;
    every strategy but the exempt ceiling: tests/workspace/test_oracle_ceiling.py).

    Both projects start from the same trained cycle-1 detector. With a training in each, CI once saw the two
    batches hold the same eight images in another order (near-tied scores, stop 22): a training's float noise,
    not an oracle read, so the comparison keeps everything but the oracle identical.
    """
    projects = [tmp_path / "project", tmp_path / "twin"]
    for project in projects:
        shutil.copytree(trained_cycle_1, project, symlinks=True)
    corrupted = list((projects[1] / "oracle" / "labels").glob("*.txt"))
    assert corrupted
    for label in corrupted:
        label.write_text("0 0.5 0.5 0.9 0.9\n" * 3)
    picks = [mgral_cycle(str(project), strategy="entropy_mean")["selected"] for project in projects]
    assert picks[0] == picks[1] and len(picks[0]) == 8
    labels = [(project / "labels" / f"{picks[0][0]}.txt").read_text() for project in projects]
    assert labels[0] != labels[1]  # the twin's cycle did label its batch from the corrupted oracle


def test_detector_training_reads_only_the_visible_labels(trained_cycle_1):
    """The cycle-1 training was given L and val, and Ultralytics' own image-to-label rule maps each of them to the
    project's visible labels/, never to oracle/ (the selection side is the test above)."""
    from ultralytics.data.utils import img2label_paths

    project = trained_cycle_1
    pool = PoolState.load(project)
    data = project / "cycles" / "cycle_001" / "detector" / "data.yaml"
    for split, ids in (("train", pool.labeled_pool_ids), ("val", pool.eval_ids("val"))):
        images = (data.parent / f"data_{split}.txt").read_text().split()
        assert sorted(Path(p).stem for p in images) == sorted(str(i) for i in ids)
        for label in img2label_paths(images):
            resolved = Path(label).resolve()
            assert resolved.parent == (project / "labels").resolve() and resolved.is_file(), label
            assert (project / "oracle").resolve() not in resolved.parents, label
