"""The pretrained start: made on tiny data it resumes and loads; the shipped file matches its provenance."""

import json

import pytest
import torch

from mgral_backends.protocol import DetectorError
from mgral_backends.ultralytics import pretrained
from mgral_workspace.config import DetectorParams
from mgral_workspace.pretrain_data import PRETRAIN_CLASSES, PretrainSpec, pretrain_dataset
from mgral_workspace.provenance import sha256_of


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_pretraining(tmp_path_factory):
    """Two epochs on 8 tiny images, cut off after the first and resumed, then exported."""
    root = tmp_path_factory.mktemp("pretrain")
    data, _ = pretrain_dataset(PretrainSpec(seed=1, image_size=64, n_train=8, n_val=2), root / "data")
    seen = []

    def stop_after_first(epoch, total):
        seen.append(epoch)
        if epoch == 1:
            raise Interrupted

    kwargs = dict(model_yaml="yolov8n.yaml", epochs=2, imgsz=64, batch=4, seed=0, cache=False)
    with pytest.raises(Interrupted):
        pretrained.pretrain_detector(data, root / "train", progress=stop_after_first, **kwargs)
    assert (root / "train" / "ultralytics" / "weights" / "last.pt").exists()
    summary = pretrained.pretrain_detector(data, root / "train", progress=lambda e, n: seen.append(e), **kwargs)
    header = pretrained.export_transfer_weights(summary["checkpoint"], root / "transfer.pt",
                                                model_yaml="yolov8n.yaml", imgsz=64)
    return root, summary, header, seen


def test_an_interrupted_pretraining_resumes_from_its_last_epoch(tiny_pretraining):
    root, summary, _, seen = tiny_pretraining
    assert summary["resumed"] is True and seen == [1, 2]  # epoch 1 was not trained again
    again = pretrained.pretrain_detector(root / "data", root / "train", model_yaml="yolov8n.yaml", epochs=2,
                                         imgsz=64, batch=4, seed=0)
    assert again == summary  # finished: recognised, nothing retrained


def test_transfer_file_is_float16_backbone_and_neck_and_loads_into_the_yaml_model(tiny_pretraining):
    root, _, header, _ = tiny_pretraining
    data = torch.load(root / "transfer.pt", map_location="cpu", weights_only=True)  # plain tensors, no pickle
    assert data["format"] == pretrained.FORMAT and header["classes"] == list(PRETRAIN_CLASSES)
    layers = {int(k.split(".")[1]) for k in data["state_dict"]}
    with_weights = {int(k.split(".")[1]) for k in pretrained.YOLO("yolov8n.yaml").model.state_dict()}
    assert layers == {i for i in with_weights if i < pretrained.TRANSFER_LAYERS}  # the Detect head starts fresh
    assert 22 in with_weights and 22 not in layers
    assert all(v.dtype == torch.float16 for v in data["state_dict"].values() if v.is_floating_point())
    yolo = pretrained.yolo_with_pretrained("yolov8n.yaml", root / "transfer.pt")
    own = yolo.model.state_dict()
    for key in ("model.0.conv.weight", "model.9.cv2.conv.weight", "model.21.m.0.cv1.conv.weight"):
        assert torch.equal(own[key], data["state_dict"][key].float())
    assert yolo.ckpt  # Ultralytics' train() seeds the dataset's model from these weights


def test_training_a_cycle_detector_starts_from_the_pretrained_layers(tiny_pretraining, tmp_path):
    from mgral_backends.ultralytics.detector import _start_model

    root, _, _, _ = tiny_pretraining
    start = _start_model(DetectorParams(pretrained=str(root / "transfer.pt")), None)
    scratch = _start_model(DetectorParams(pretrained=None), None)
    key = "model.4.m.0.cv1.conv.weight"
    assert not torch.equal(start.model.state_dict()[key], scratch.model.state_dict()[key])
    assert not scratch.ckpt  # from scratch: Ultralytics builds a fresh model


def test_missing_or_foreign_pretrained_files_are_refused_by_name(tmp_path):
    with pytest.raises(DetectorError, match="nowhere.pt does not exist"):
        pretrained.resolve_pretrained(str(tmp_path / "nowhere.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorError, match="junk.pt is neither an MGRAL transfer file nor a YOLO checkpoint"):
        pretrained.donor_model(junk, "yolov8n.yaml")
    with pytest.raises(ValueError, match="expected 'builtin', null"):
        DetectorParams(pretrained="weights.bin")
    assert DetectorParams(pretrained="none").pretrained is None


def test_the_shipped_start_matches_its_provenance_record():
    record = json.loads(pretrained.BUILTIN_PROVENANCE.read_text())
    path = pretrained.BUILTIN_WEIGHTS
    assert record["file"] == path.name
    assert record["sha256"] == sha256_of(path) and record["bytes"] == path.stat().st_size
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert record["command"].startswith("mgral pretrain") and record["commit"] not in ("", "unknown")
    assert record["generator"]["seed"] == record["training"].get("seed", record["generator"]["seed"])
    data = pretrained.read_transfer_file(path)
    assert data["classes"] == list(PRETRAIN_CLASSES) and data["model"] == "yolov8n.yaml"
    _, matched = pretrained.donor_model(path, "yolov8n.yaml")
    assert matched == len(data["state_dict"])
