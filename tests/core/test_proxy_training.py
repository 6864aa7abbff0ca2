"""Head-proxy records: label conversion, Ultralytics' loss, determinism, learning, and no oracle for B."""

import shutil

import numpy as np
import pytest
import torch

import mgral_formats.yolo as yolo_format
from mgral_core.detections import Detections
from mgral_backends.ultralytics.detector import letterbox_batch
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info
from mgral_workspace.record_values import build_head_proxy
from mgral_backends.ultralytics.proxy_training import (
    HeadTuneConfig,
    _collate,
    cache_head_features,
    letterboxed_targets,
    load_head_features,
    pseudo_targets,
    save_head_features,
)
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import ops

IMGSZ = 64
FAST = HeadTuneConfig(trainable="last", epochs=3, lr=1e-2, batch_size=8, seeds=(0,), pseudo_ignore=0.0)


@pytest.fixture(scope="module")
def model() -> DetectionModel:
    torch.manual_seed(0)  # the test model's own random init; records themselves use explicit seeds
    return DetectionModel("yolov8n.yaml", nc=8, verbose=False).eval()


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random.pt"
    torch.save({"model": model, "train_args": {"imgsz": IMGSZ}}, path)
    return path


def make_proxy(project, weights, config=FAST):
    """A HeadProxy over the tiny project, and its candidate ids."""
    candidates = PoolState.load(project).unlabeled_pool_ids.tolist()
    return build_head_proxy(project, weights, candidates, imgsz=IMGSZ, config=config), candidates


@pytest.fixture
def project_proxy(tiny_project, weights):
    return make_proxy(tiny_project, weights)


def some_targets(ids, seed):
    """Made-up labels (2 boxes per image) in 64 px image coordinates."""
    rng = np.random.default_rng(seed)
    out = {}
    for image_id in ids:
        xy = rng.uniform(2, 40, size=(2, 2))
        wh = rng.uniform(10, 22, size=(2, 2))
        out[image_id] = (np.hstack([xy, xy + wh]).astype(np.float32), rng.integers(0, 8, size=2))
    return out


def test_letterboxed_targets_inverts_scale_boxes():
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 200.0, 100.0]], np.float32)  # in a 100 x 200 image
    rows = letterboxed_targets(boxes, np.array([3, 1]), (100, 200), 64)  # (2, 5) cls cx cy w h, normalized
    assert rows[:, 0].tolist() == [3.0, 1.0]
    xyxy = ops.xywh2xyxy(rows[:, 1:] * 64)  # letterboxed pixels
    back = ops.scale_boxes((64, 64), xyxy.clone(), (100, 200))
    np.testing.assert_allclose(back.numpy(), boxes, atol=1e-3)
    square = letterboxed_targets(np.array([[16.0, 16.0, 48.0, 32.0]]), np.array([0]), (64, 64), 64)
    np.testing.assert_allclose(square.numpy(), [[0, 0.5, 0.375, 0.5, 0.25]], atol=1e-6)
    assert letterboxed_targets(np.zeros((0, 4)), np.zeros(0), (64, 64), 64).shape == (0, 5)


def test_pseudo_targets_keep_confident_boxes_of_the_batch_only():
    det = Detections(np.array([[0, 0, 5, 5], [1, 1, 9, 9]], np.float32), np.array([0.9, 0.1], np.float32),
                     np.array([2, 4]))
    out = pseudo_targets({"a": det, "b": det, "c": det}, ["a", "c"], conf=0.25)
    assert sorted(out) == ["a", "c"]
    boxes, classes = out["a"]
    assert boxes.tolist() == [[0, 0, 5, 5]] and classes.tolist() == [2]


def test_collate_builds_ultralytics_batch():
    batch = _collate([torch.tensor([[1, 0.5, 0.5, 0.2, 0.2]]), torch.zeros(0, 5),
                      torch.tensor([[0, 0.1, 0.1, 0.1, 0.1], [7, 0.9, 0.9, 0.1, 0.1]])])
    assert batch["batch_idx"].tolist() == [0.0, 2.0, 2.0]
    assert batch["cls"].shape == (3, 1) and batch["bboxes"].shape == (3, 4)
    assert batch["cls"].flatten().tolist() == [1.0, 0.0, 7.0]


def test_feature_cache_round_trip_and_missing_id(project_proxy, tmp_path):
    proxy, _ = project_proxy
    path = save_head_features(tmp_path / "features.pt", proxy.features)
    loaded = load_head_features(path)
    assert loaded.ids.tolist() == proxy.features.ids.tolist() and loaded.imgsz == IMGSZ
    assert [x.shape[1:] for x in loaded.levels] == [(64, 8, 8), (128, 4, 4), (256, 2, 2)]  # strides 8/16/32
    for a, b in zip(loaded.levels, proxy.features.levels):
        assert torch.equal(a, b)
    with pytest.raises(KeyError, match="nope"):
        loaded.rows(["nope"])


def test_cached_features_match_a_fresh_forward(model, tiny_project):
    pool = PoolState.load(tiny_project)
    ids = pool.ids("val").tolist()[:4]
    paths = [tiny_project / f for f in pool.files(ids)]
    features = cache_head_features(model, paths, ids, imgsz=IMGSZ, dtype=torch.float32)
    captured = []
    hook = model.model[-1].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    x, _ = letterbox_batch(paths, IMGSZ, 32)  # (4, 3, 64, 64)
    with torch.no_grad():
        model(x)
    hook.remove()
    for level, fresh in zip(features.levels, captured[0]):
        assert torch.allclose(level, fresh)


@pytest.mark.parametrize("trainable", ["last", "head"])
def test_detection_loss_equals_ultralytics_criterion(tiny_project, weights, trainable):
    proxy, _ = make_proxy(tiny_project, weights, HeadTuneConfig(trainable=trainable))
    module = proxy._trainable_copy()
    rows = torch.from_numpy(proxy.features.rows(proxy.labeled_ids[:8]))
    preds = proxy._predict(module, proxy._gather(rows))
    batch = _collate(proxy._labeled_targets[:8])
    expected = proxy._criterion(preds, batch)[0].sum() / 8  # Ultralytics returns (box, cls, dfl) x batch size
    got = proxy.detection_loss(preds, batch, torch.zeros(8, dtype=torch.bool))
    assert torch.allclose(got, expected)


def test_record_is_deterministic_learns_and_depends_on_the_batch(project_proxy):
    proxy, candidates = project_proxy
    a, b = some_targets(candidates[:8], seed=1), some_targets(candidates[8:16], seed=2)
    first = proxy.record(a, seeds=[0])
    proxy.record(b, seeds=[0])  # no hidden state carried from one record to the next
    again = proxy.record(a, seeds=[0])
    assert first.map50_95 == again.map50_95 and first.val_loss == again.val_loss
    assert first.train_loss_last < first.train_loss_first
    assert proxy.record(b, seeds=[0]).val_loss != first.val_loss
    assert proxy.record(a, seeds=[1]).val_loss != first.val_loss  # the seed sets the data order
    with pytest.raises(ValueError, match="already in L"):
        proxy.record(some_targets(proxy.labeled_ids[:1], seed=3))


def test_pseudo_options_change_only_pseudo_records(tiny_project, weights):
    proxy, candidates = make_proxy(tiny_project, weights)
    batch = some_targets(candidates[:8], seed=1)
    plain = proxy.record(batch, seeds=[0])
    proxy, _ = make_proxy(tiny_project, weights, HeadTuneConfig(trainable="last", epochs=3, lr=1e-2, batch_size=8,
                                                                 pseudo_classes="agnostic", pseudo_ignore=0.01))
    assert proxy.record(batch, seeds=[0]).val_loss != plain.val_loss
    assert proxy.record(batch, seeds=[0], pseudo=False).val_loss == plain.val_loss  # true labels: plain training


def test_building_and_recording_never_read_the_oracle(tiny_project, weights, monkeypatch):
    shutil.rmtree(load_project_info(tiny_project).oracle_dir)  # the hidden labels are gone
    read = yolo_format.read_yolo_label

    def guarded(path, *args):
        assert "oracle" not in str(path), f"oracle label read: {path}"
        return read(path, *args)

    monkeypatch.setattr("mgral_workspace.cycle_steps.read_yolo_label", guarded)
    proxy, candidates = make_proxy(tiny_project, weights)
    detections = {i: Detections(np.array([[8, 8, 30, 30]], np.float32), np.array([0.8], np.float32), np.array([1]))
                  for i in candidates[:8]}
    score = proxy.record_from_detections(detections, candidates[:8])
    assert np.isfinite(score.val_loss) and score.seconds > 0
    assert score.train_loss_first != proxy.record({i: (np.zeros((0, 4)), np.zeros(0)) for i in candidates[:8]}
                                                  ).train_loss_first  # the pseudo box was used


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="trainable"):
        HeadTuneConfig(trainable="all")
    with pytest.raises(ValueError, match="metric"):
        HeadTuneConfig(metric="accuracy")
    with pytest.raises(ValueError, match="seeds"):
        HeadTuneConfig(seeds=())
    with pytest.raises(ValueError, match="pseudo_conf"):
        HeadTuneConfig(pseudo_conf=1.5)


def test_records_in_threads_equal_serial_records(project_proxy):
    from concurrent.futures import ThreadPoolExecutor

    proxy, candidates = project_proxy
    batches = [some_targets(candidates[i * 8:(i + 1) * 8], seed=i) for i in range(4)]
    serial = [proxy.record(b, seeds=[0]).val_loss for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda b: proxy.record(b, seeds=[0]).val_loss, batches))
    assert threaded == serial
