"""The detector seam: both backends satisfy `DetectorBackend`, and the cycle steps run on the fake one."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mgral_workspace.cycle_steps as cycle_steps
import mgral_workspace.record_values as record_values
from mgral_backends import BACKENDS, DetectorBackend, get_backend
from mgral_backends.ultralytics.backend import UltralyticsBackend
from mgral_backends.ultralytics.detector import load_detection_model
from mgral_workspace.config import DetectorParams, load_params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.pool import PoolState
from tests.backends.fake_detector import FakeDetectorBackend


def test_both_backends_satisfy_the_protocol():
    assert isinstance(UltralyticsBackend(DetectorParams()), DetectorBackend)
    assert isinstance(FakeDetectorBackend(), DetectorBackend)
    assert not isinstance(object(), DetectorBackend)
    assert isinstance(get_backend(DetectorParams()), UltralyticsBackend) and "ultralytics" in BACKENDS
    with pytest.raises(ValueError, match="unknown detector backend 'nope'; known backends: ultralytics"):
        get_backend(DetectorParams(), "nope")


def test_ultralytics_backend_passes_its_detector_settings(monkeypatch, tmp_path):
    import mgral_backends.ultralytics.backend as backend_module

    seen = {}
    monkeypatch.setattr(backend_module, "predict_images", lambda weights, paths, **kw: seen.update(kw) or ([], None))
    for name in ("train_detector", "train_detector_isolated"):
        monkeypatch.setattr(backend_module, name, lambda data_yaml, out_dir, params, _name=name, **kw: seen.update(
            data_yaml=data_yaml, params=params, trainer=_name, **kw))
    params = DetectorParams(imgsz=96, predict_conf=0.05, embed_batch=7, device="cpu")
    backend = UltralyticsBackend(params)
    backend.predict("w.pt", ["a.png"], want_embeddings=False)
    assert {k: seen[k] for k in ("imgsz", "conf", "batch", "device", "want_embeddings")} == {
        "imgsz": 96, "conf": 0.05, "batch": 7, "device": "cpu", "want_embeddings": False}
    backend.train([tmp_path / "images" / "a.png"], [tmp_path / "images" / "b.png"], ["cat"], tmp_path / "out",
                  epochs=3, seed=5)
    assert seen["data_yaml"] == tmp_path / "out" / "data.yaml" and seen["data_yaml"].exists()
    assert seen["params"] is params and (seen["epochs"], seen["seed"], seen["init_weights"]) == (3, 5, None)
    assert seen["trainer"] == "train_detector_isolated"  # detector.isolate, the default: a fresh process
    UltralyticsBackend(params.model_copy(update={"isolate": False})).train([], [], ["cat"], tmp_path / "in", epochs=1)
    assert seen["trainer"] == "train_detector"


def test_infer_pool_caches_the_fake_backends_output(tiny_project, tmp_path):
    fake = FakeDetectorBackend()
    weights = fake.train([], [], [], tmp_path / "fake", epochs=1).weights
    params = load_params(tiny_project / "params.yaml")
    path = cycle_steps.infer_pool(tiny_project, weights, params.detector, 1, backend=fake)
    pool = PoolState.load(tiny_project)
    pool_ids = pool.ids("pool")
    inference = load_inference(path)
    assert inference.ids.tolist() == pool_ids.tolist() and len(pool_ids) == 60
    expected = np.stack([fake.embedding(f) for f in pool.files(pool_ids)])  # (60, 16)
    np.testing.assert_array_equal(inference.embeddings, expected)
    first = fake.detections(pool.files(pool_ids[:1])[0])
    np.testing.assert_array_equal(inference.detections[0].boxes_xyxy, first.boxes_xyxy)
    assert fake.calls == ["train", "predict"]
    assert cycle_steps.infer_pool(tiny_project, weights, params.detector, 1, backend=fake) == path
    assert fake.calls == ["train", "predict"]  # the cycle's cache, not a second pass


def test_cycle_steps_and_record_values_look_the_backend_up(tiny_project, monkeypatch):
    fake = FakeDetectorBackend()
    monkeypatch.setattr(cycle_steps, "get_backend", lambda detector: fake)
    monkeypatch.setattr(record_values, "get_backend", lambda detector: fake)
    params = load_params(tiny_project / "params.yaml", {"lookup_table.value": "proxy"})  # records train the head
    trained = cycle_steps.train_cycle_detector(tiny_project, params, 1, log=lambda _: None)
    assert json.loads(trained.weights.read_text())["train_images"] == 20
    summary = cycle_steps.evaluate_split(tiny_project, trained.weights, params, "test")
    assert summary.images == 16 and 0 <= summary.map50_95 <= 1
    inference = cycle_steps.infer_pool(tiny_project, trained.weights, params.detector, 1)
    table = tiny_project / "cycles" / "cycle_001" / "table"
    record_values.cache_cycle_features(tiny_project, params, trained.weights, table)
    unlabeled = PoolState.load(tiny_project).unlabeled_pool_ids.tolist()
    record = record_values.record_value(tiny_project, params, table, "record_000", trained.weights, unlabeled[:8],
                                        inference)
    assert 0 <= record["value"] < 1
    assert fake.calls == ["train", "predict", "predict", "head_features", "head_proxy"]


def test_detector_backend_is_chosen_in_params_and_an_unknown_one_is_named(tmp_path):
    from mgral_backends import BACKENDS
    from mgral_workspace.config import ConfigError, load_params

    assert "ultralytics" in BACKENDS
    path = tmp_path / "params.yaml"
    path.write_text("detector:\n  backend: tensorflow\n")
    with pytest.raises(ConfigError, match="detector.backend: .*unknown detector backend 'tensorflow'"):
        load_params(path)


def test_ultralytics_start_weights_are_the_pretrained_start_as_a_checkpoint(tmp_path):
    """What a cold start embeds with: the user's .pt as is, the yaml with detector.pretrained's layers saved
    once, or nothing (from scratch)."""
    import torch

    from mgral_backends.protocol import DetectorError
    from mgral_backends.ultralytics.pretrained import BUILTIN_WEIGHTS, read_transfer_file

    backend = UltralyticsBackend(DetectorParams(imgsz=64, pretrained="builtin"))
    start = backend.start_weights(tmp_path / "cold")
    assert start == tmp_path / "cold" / "pretrained_start.pt"
    model = load_detection_model(start)
    shipped = read_transfer_file(BUILTIN_WEIGHTS)["state_dict"]
    key = "model.0.conv.weight"
    assert torch.allclose(model.state_dict()[key].float(), shipped[key].float())  # the shipped backbone
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (120, 40, 200)).save(image)
    _, embeddings = backend.predict(start, [image])
    assert embeddings.shape == (1, 256)
    assert UltralyticsBackend(DetectorParams(pretrained=None)).start_weights(tmp_path / "x") is None
    own = tmp_path / "own.pt"
    own.write_bytes(b"weights")
    assert UltralyticsBackend(DetectorParams(model=str(own))).start_weights(tmp_path / "x") == own
    with pytest.raises(DetectorError, match="does not exist"):
        UltralyticsBackend(DetectorParams(model=str(tmp_path / "gone.pt"))).start_weights(tmp_path / "x")


def test_a_finished_training_is_found_again_after_the_project_moves(tiny_project, monkeypatch):
    fake = FakeDetectorBackend()
    monkeypatch.setattr(cycle_steps, "get_backend", lambda detector: fake)
    params = load_params(tiny_project / "params.yaml")
    trained = cycle_steps.train_cycle_detector(tiny_project, params, 1, log=lambda _: None)
    record = tiny_project / "cycles" / "cycle_001" / "detector" / "trained.json"
    assert not Path(json.loads(record.read_text())["weights"]).is_absolute()  # stored inside the project
    moved = tiny_project.parent / "moved"
    shutil.move(tiny_project, moved)
    again = cycle_steps.train_cycle_detector(moved, params, 1, log=lambda _: None)
    assert fake.calls == ["train"]  # reused, not retrained
    assert again.weights == moved / trained.weights.relative_to(tiny_project) and again.weights.exists()
    # a record written before weights were stored relative (an absolute path to a folder that has moved)
    record = moved / "cycles" / "cycle_001" / "detector" / "trained.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "weights": str(trained.weights)}))
    assert cycle_steps.train_cycle_detector(moved, params, 1, log=lambda _: None).weights == again.weights
