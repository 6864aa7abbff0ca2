"""The detector in the MLflow Model Registry: one version per cycle, `champion` on the best test mAP50-95,
`latest-cycle` on the newest; loadable as a pyfunc. With the fake detector (fast); the real YOLO's
registered model is checked against the project's own inference in tests/flows/test_model_registry_yolo.py."""

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from prefect.logging import disable_run_logger

import mgral_workspace.cycle_steps as cycle_steps
from mgral_workspace.config import ConfigError, load_params
from mgral_workspace.pool import PoolState
from tasks import tracking
from tasks.tracking_tasks import register_detector_task
from tests.backends.fake_detector import FakeDetectorBackend
from tests.conftest import write_params


@pytest.fixture
def fake_registry(tiny_project, monkeypatch):
    """The tiny project with the fake detector behind the cycle steps; `register(train_images, test_map)` trains a
    fake detector on that many images and registers it as the next cycle's; the project's MLflow store is the
    process's (for `models:/` URIs)."""
    fake = FakeDetectorBackend(num_classes=8)
    monkeypatch.setattr(cycle_steps, "get_backend", lambda detector: fake)
    params = load_params(tiny_project / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri(tiny_project, params))
    cycles = []

    def register(train_images: int, test_map: float) -> dict:
        cycle = len(cycles) + 1
        weights = fake.train(["x.png"] * train_images, [], [], tiny_project / "cycles" / f"c{cycle}", epochs=1).weights
        run_id = tracking.start_run(tiny_project, params, f"cycle {cycle}")
        with disable_run_logger():
            cycles.append(register_detector_task.fn(str(tiny_project), params, run_id, str(weights), test_map, cycle))
        return cycles[-1]

    return tiny_project, params, fake, register


def test_champion_moves_only_to_a_better_version_latest_cycle_always_and_the_champion_loads(fake_registry):
    """One store for the whole story (a fresh MLflow database costs seconds): four versions, a re-run, a load."""
    project, params, fake, register = fake_registry
    name = f"mgral-{project.resolve().name}-detector"
    client = MlflowClient(tracking.tracking_uri(project, params))

    def alias(which: str) -> int:
        return int(client.get_model_version_by_alias(name, which).version)

    first = register(10, 0.30)
    assert first == {"name": name, "version": 1, "aliases": ["latest-cycle", "champion"], "champion": 1,
                     "uri": f"models:/{name}/1"}
    worse = register(20, 0.20)
    assert worse["aliases"] == ["latest-cycle"] and worse["champion"] == 1
    assert (alias("champion"), alias("latest-cycle")) == (1, 2)
    register(30, 0.30)  # as good, not better: the champion stays
    assert (alias("champion"), alias("latest-cycle")) == (1, 3)

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.get_raw_model()["train_images"] == 10  # version 1's detector
    pool = PoolState.load(project)
    paths = [str(project / f) for f in pool.files(pool.ids("pool")[:6])]
    frame = model.predict(paths)
    assert list(frame.columns) == ["image", "class", "score", "x1", "y1", "x2", "y2"]
    expected = [fake.detections(p) for p in paths]
    assert len(frame) == sum(len(d.scores) for d in expected) > 0
    for path, found in zip(paths, expected):
        rows = frame[frame["image"] == path]
        np.testing.assert_allclose(rows[["x1", "y1", "x2", "y2"]].to_numpy(), found.boxes_xyxy, atol=1e-4)
        np.testing.assert_allclose(rows["score"].to_numpy(), found.scores, atol=1e-6)
    assert (model.predict(paths, params={"conf": 0.6})["score"] >= 0.6).all()

    better = register(40, 0.45)
    assert better["aliases"] == ["latest-cycle", "champion"] and (alias("champion"), alias("latest-cycle")) == (4, 4)
    assert mlflow.pyfunc.load_model(f"models:/{name}@champion").get_raw_model()["train_images"] == 40
    again = register(40, 0.45)  # the same weights again (a resumed cycle): no new version
    assert again["version"] == 4
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == [1, 2, 3, 4]
    assert [float(versions[v].tags["test_map50_95"]) for v in (1, 2, 3, 4)] == [0.30, 0.20, 0.30, 0.45]
    assert versions[2].tags["mgral.cycle"] == "2" and versions[2].run_id  # linked to the cycle's run


def test_register_detector_off_and_a_bad_model_name_is_refused(tiny_project):
    write_params(tiny_project / "params.yaml", tracking__register_detector=False)
    assert load_params(tiny_project / "params.yaml").tracking.register_detector is False
    assert load_params(tiny_project / "params.yaml").benchmark.quick.apply(
        load_params(tiny_project / "params.yaml"), 0, tiny_project).tracking.register_detector is False
    write_params(tiny_project / "params.yaml", tracking__registered_model="team/detector")
    with pytest.raises(ConfigError, match="tracking.registered_model: .*without '/', ':' or quotes"):
        load_params(tiny_project / "params.yaml")
