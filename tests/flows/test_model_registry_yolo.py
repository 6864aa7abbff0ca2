"""A cycle registers its real YOLO detector; `models:/...@champion` loads offline and finds the boxes the cycle did."""

import socket

import mlflow
import numpy as np
import pytest
from PIL import Image

from flows.cycle import mgral_cycle
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info

pytestmark = pytest.mark.slow


def test_the_champion_predicts_the_boxes_of_the_projects_own_inference(tiny_project, prefect_harness, monkeypatch):
    result = mgral_cycle(str(tiny_project), strategy="random")
    name = f"mgral-{tiny_project.resolve().name}-detector"
    assert result["registered"] == {"name": name, "version": 1, "aliases": ["latest-cycle", "champion"],
                                    "champion": 1, "uri": f"models:/{name}/1"}
    inference = load_inference(tiny_project / "cycles" / "cycle_001" / "pool_inference.npz")  # the cycle's own
    found = inference.detections_by_id()
    pool = PoolState.load(tiny_project)
    ids = [i for i in pool.ids("pool") if len(found[i].scores) > 0][:2]
    paths = [str(tiny_project / f) for f in pool.files(ids)]

    def no_network(*args, **kwargs):
        raise AssertionError(f"the registered detector tried to reach the network: {args}")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(tiny_project / 'mlflow.db').resolve()}")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    frame = model.predict([paths[0], np.asarray(Image.open(paths[1]).convert("RGB"))])  # a path and an RGB array
    monkeypatch.undo()

    assert list(frame.columns) == ["image", "class", "score", "x1", "y1", "x2", "y2"]
    assert set(frame["image"]) == {paths[0], "array[1]"}
    class_names = load_project_info(tiny_project).class_names
    for image, image_id in zip((paths[0], "array[1]"), ids):
        rows, expected = frame[frame["image"] == image], found[image_id]
        assert len(rows) == len(expected.scores) > 0
        np.testing.assert_allclose(rows[["x1", "y1", "x2", "y2"]].to_numpy(), expected.boxes_xyxy, atol=1e-4)
        np.testing.assert_allclose(rows["score"].to_numpy(), expected.scores, atol=1e-4)
        assert rows["class"].tolist() == [class_names[c] for c in expected.classes]
    confident = model.predict(paths, params={"conf": 0.05})  # a higher floor for serving
    assert len(confident) == sum(int((found[i].scores >= 0.05).sum()) for i in ids)
    assert (confident["score"] >= 0.05).all()
