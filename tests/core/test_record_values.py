"""A cycle's record values: the head-feature cache, reproducible records, no oracle, and the SNR summary."""

import shutil

import numpy as np
import pytest
import torch

from mgral_core.seeding import seed_for
from mgral_workspace.config import Params, load_params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.cycle_steps import infer_pool
from mgral_core.lookup_table import table_diagnostics
from mgral_workspace.pool import PoolState
from mgral_workspace.project import load_project_info
from mgral_workspace.record_values import (
    FEATURES_FILE,
    cache_cycle_features,
    diagnostic_seeds,
    record_value,
    true_label_record,
)
from ultralytics.nn.tasks import DetectionModel


@pytest.fixture
def cycle_inputs(tiny_project, tmp_path):
    """(project, params, weights of a randomly initialised YOLOv8n, pool inference, table dir)."""
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=8, verbose=False).eval()
    model.nc, model.names = 8, {i: f"class{i}" for i in range(8)}  # as the trainer sets them
    weights = tmp_path / "random.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64}}, weights)
    params = load_params(tiny_project / "params.yaml", {"lookup_table.value": "proxy",  # head-proxy records
                                                         "lookup_table.head_epochs": 2,
                                                         "lookup_table.pseudo_conf": 0.01})
    inference = infer_pool(tiny_project, weights, params.detector, 1)
    return tiny_project, params, weights, inference, tmp_path / "table"


def test_records_reuse_cached_features_and_are_reproducible(cycle_inputs):
    project, params, weights, inference, table = cycle_inputs
    path = cache_cycle_features(project, params, weights, table)
    assert path == table / FEATURES_FILE
    mtime = path.stat().st_mtime_ns
    assert cache_cycle_features(project, params, weights, table).stat().st_mtime_ns == mtime  # reused
    unlabeled = PoolState.load(project).unlabeled_pool_ids.tolist()
    a = record_value(project, params, table, "record_000", weights, unlabeled[:8], inference)
    again = record_value(project, params, table, "record_000", weights, unlabeled[:8], inference)
    other = record_value(project, params, table, "record_001", weights, unlabeled[8:16], inference)
    assert a == {**again, "seconds": a["seconds"]}  # bitwise the same training, hence the same value
    assert a["weights_digest"] != other["weights_digest"]
    assert np.isfinite(a["value"]) and np.isfinite(a["train_loss_last"])
    seeds_b = record_value(project, params, table, "record_000", weights, unlabeled[:8], inference,
                           seeds=diagnostic_seeds(params))
    assert seeds_b["weights_digest"] != a["weights_digest"]


def test_sampled_pseudo_labels_average_their_draws(cycle_inputs):
    """pseudo_labels: sampled values a record as the mean of pseudo_draws records, one per draw, each on the
    draw's labels; the draws are fixed per image, so the record repeats."""
    from mgral_workspace.record_values import cycle_proxy, record_pseudo_targets
    from mgral_workspace.inference_cache import load_inference

    project, params, weights, inference, table = cycle_inputs
    sampled = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(
        update={"pseudo_labels": "sampled", "pseudo_draws": 2, "head_seeds": [0]})})
    cache_cycle_features(project, sampled, weights, table)
    batch = PoolState.load(project).unlabeled_pool_ids.tolist()[:8]
    value = record_value(project, sampled, table, "record_000", weights, batch, inference)
    assert value == {**record_value(project, sampled, table, "record_000", weights, batch, inference),
                     "seconds": value["seconds"]}
    detections = load_inference(inference).detections_by_id()
    draws = record_pseudo_targets(sampled, detections, batch)
    assert len(draws) == 2 and set(draws[0]) == set(batch)
    proxy = cycle_proxy(project, sampled, weights, table)
    each = [proxy.record(targets).map50_95 for targets in draws]
    assert value["value"] == pytest.approx(np.mean(each), abs=1e-12)
    threshold = record_pseudo_targets(params, detections, batch)
    assert len(threshold) == 1
    with pytest.raises(ValueError, match="needs proxy: head"):
        load_params(project / "params.yaml", {"lookup_table.pseudo_labels": "sampled", "lookup_table.proxy": "full"})


def test_detection_values_need_no_training(cycle_inputs):
    """value: expected_objects (the mean over B of its summed detection scores >= the floor) and class_gain (L's
    labeled class counts and B's expected ones) are read from the cycle's pool inference: no head features, no
    training, and a batch outside the pool is refused."""
    from mgral_core.detections import class_gain, expected_class_counts
    from mgral_workspace.cycle_steps import ground_truth
    from mgral_workspace.inference_cache import load_inference

    project, params, weights, _, table = cycle_inputs
    params = params.model_copy(update={
        "lookup_table": params.lookup_table.model_copy(update={"value": "expected_objects", "expected_floor": 1e-5}),
        "detector": params.detector.model_copy(update={"predict_conf": 0.0})})  # an untrained model scores ~1e-4
    inference = infer_pool(project, weights, params.detector, 1)
    unlabeled = PoolState.load(project).unlabeled_pool_ids.tolist()
    batch = unlabeled[:6]
    result = record_value(project, params, table, "record_000", weights, batch, inference)
    detections = load_inference(inference).detections_by_id()
    by_hand = np.mean([detections[i].scores[detections[i].scores >= 1e-5].sum() for i in batch])
    assert result["value"] == pytest.approx(by_hand, rel=1e-6) and result["value"] > 0
    assert not (table / FEATURES_FILE).exists()  # nothing was trained or cached
    gain = params.model_copy(update={"lookup_table": params.lookup_table.model_copy(update={"value": "class_gain"})})
    labeled = np.zeros(8)
    pool = PoolState.load(project)
    for _, classes in ground_truth(project, pool, pool.labeled_pool_ids.tolist()).values():
        np.add.at(labeled, classes, 1)
    assert labeled.sum() > 0
    by_hand = class_gain(labeled, expected_class_counts([detections[i] for i in batch], 1e-5, 8))
    assert record_value(project, gain, table, "record_000", weights, batch, inference)["value"] == pytest.approx(
        by_hand) and by_hand > 0
    with pytest.raises(KeyError, match="no detections for 1 of the batch's images, e.g. not_an_image"):
        record_value(project, params, table, "record_001", weights, [*batch[:2], "not_an_image"], inference)


def test_class_gain_per_group_uses_clusters_of_the_whole_pool_inference(cycle_inputs):
    """class_gain_groups: the groups are k-means clusters of the cycle's pool embeddings, L's counts are per
    group and class, and a record's value equals the exact reward's value of the same batch."""
    from mgral_core.detections import class_gain, expected_class_counts
    from mgral_workspace.cycle_steps import ground_truth
    from mgral_workspace.inference_cache import load_inference
    from mgral_workspace.record_values import image_groups, pool_detection_value

    project, params, weights, _, table = cycle_inputs
    params = params.model_copy(update={
        "lookup_table": params.lookup_table.model_copy(update={"value": "class_gain", "expected_floor": 1e-5,
                                                               "class_gain_groups": 2}),
        "detector": params.detector.model_copy(update={"predict_conf": 0.0})})
    inference_path = infer_pool(project, weights, params.detector, 1)
    inference = load_inference(inference_path)
    group_of = image_groups(inference, params.lookup_table)
    assert set(group_of) == set(inference.ids.tolist()) and set(group_of.values()) <= {0, 1}
    pool = PoolState.load(project)
    labeled = np.zeros((2, 8))
    for image, (_, classes) in ground_truth(project, pool, pool.labeled_pool_ids.tolist()).items():
        np.add.at(labeled[group_of[image]], classes, 1)
    weights_of = np.bincount(list(group_of.values()), minlength=2) / len(group_of)
    detections = inference.detections_by_id()
    batch = pool.unlabeled_pool_ids.tolist()[:6]
    expected = np.zeros((2, 8))
    for image in batch:
        expected[group_of[image]] += expected_class_counts([detections[image]], 1e-5, 8)
    by_hand = class_gain(labeled, expected, weights_of)
    value = record_value(project, params, table, "record_000", weights, batch, inference_path)["value"]
    assert value == pytest.approx(by_hand) and by_hand > 0
    assert pool_detection_value(project, params, inference_path)(batch) == pytest.approx(value)
    too_many = params.lookup_table.model_copy(update={"class_gain_groups": len(inference.ids) + 1})
    with pytest.raises(ValueError, match="class_gain_groups is .*, more than the .* images of the pool inference"):
        image_groups(inference, too_many)


def test_class_gain_groups_switch_on_with_the_labeled_sets_coverage_gap(cycle_inputs):
    """class_gain_groups_on: coverage_warning: per group only in a cycle whose labeled set's coverage gap (the
    coverage warning's measure, before the batch) is above selection.coverage_warn, per class otherwise."""
    from mgral_core.coverage import selection_coverage
    from mgral_workspace.cycle_steps import pool_view
    from mgral_workspace.record_values import groups_in_use, labeled_coverage_gap, pool_detection_value

    project, params, weights, _, table = cycle_inputs
    detector = params.detector.model_copy(update={"predict_conf": 0.0})
    inference_path = infer_pool(project, weights, detector, 1)
    inference = load_inference(inference_path)

    def with_(groups_on: str, warn: float, groups: int = 2) -> Params:
        return params.model_copy(update={
            "lookup_table": params.lookup_table.model_copy(update={
                "value": "class_gain", "expected_floor": 1e-5, "class_gain_groups": groups,
                "class_gain_groups_on": groups_on}),
            "selection": params.selection.model_copy(update={"coverage_warn": warn}), "detector": detector})

    gap = labeled_coverage_gap(project, with_("coverage_warning", 0.2), inference)
    view, s = pool_view(project, inference_path), params.selection
    by_hand = selection_coverage(view.labeled_embeddings, view.unlabeled_embeddings, np.zeros(0, np.int64),
                                 s.coverage_clusters, seed_for(s.seed, 1, "coverage")).labeled_gap
    assert gap == pytest.approx(by_hand) and 0 < gap < 1  # cycle 1's clustering, as its warning clusters
    batch = PoolState.load(project).unlabeled_pool_ids.tolist()[:6]
    per_class = pool_detection_value(project, with_("always", 0.2, groups=1), inference_path)(batch)
    per_group = pool_detection_value(project, with_("always", 0.2), inference_path)(batch)
    assert per_class != pytest.approx(per_group)
    near, far = with_("coverage_warning", min(1.0, gap + 0.01)), with_("coverage_warning", gap / 2)
    assert (groups_in_use(project, near, inference), groups_in_use(project, far, inference)) == (1, 2)
    assert pool_detection_value(project, near, inference_path)(batch) == pytest.approx(per_class)
    assert pool_detection_value(project, far, inference_path)(batch) == pytest.approx(per_group)
    assert record_value(project, far, table, "record_000", weights, batch, inference_path)["value"] == \
        pytest.approx(per_group)
    pool = PoolState.load(project)  # label the batch: the cached gap of the old labeled set must not come back
    pool.mark_selected(batch, 1).mark_labeled({i: f"labels/{i}.txt" for i in batch}, 1).save(project)
    view = pool_view(project, inference_path)
    again = selection_coverage(view.labeled_embeddings, view.unlabeled_embeddings, np.zeros(0, np.int64),
                               s.coverage_clusters, seed_for(s.seed, 2, "coverage")).labeled_gap
    assert labeled_coverage_gap(project, with_("coverage_warning", 0.2), inference) == pytest.approx(again) != gap


def test_class_gain_groups_switch_needs_groups_and_coverage():
    from mgral_workspace.config import ConfigError, params_from_dict

    good = {"lookup_table": {"value": "class_gain", "class_gain_groups": 16, "class_gain_groups_on":
                             "coverage_warning"}}
    assert params_from_dict(good).lookup_table.class_gain_groups_on == "coverage_warning"
    with pytest.raises(ConfigError, match=r"class_gain_groups > 1 \(got 1\)"):
        params_from_dict({"lookup_table": {**good["lookup_table"], "class_gain_groups": 1}})
    with pytest.raises(ConfigError, match=r"selection.coverage_clusters > 0 \(got 0\)"):
        params_from_dict({**good, "selection": {"coverage_clusters": 0}})


def test_stale_feature_cache_is_recomputed(cycle_inputs):
    project, params, weights, _, table = cycle_inputs
    table.mkdir()
    (table / FEATURES_FILE).write_bytes(b"not a torch file")
    path = cache_cycle_features(project, params, weights, table)
    assert path.stat().st_size > 1000


def test_records_never_read_the_oracle_but_fidelity_does(cycle_inputs):
    project, params, weights, inference, table = cycle_inputs
    cache_cycle_features(project, params, weights, table)
    batch = PoolState.load(project).unlabeled_pool_ids.tolist()[:8]
    before = record_value(project, params, table, "record_000", weights, batch, inference)
    shutil.rmtree(load_project_info(project).oracle_dir)  # the hidden labels are gone
    after = record_value(project, params, table, "record_000", weights, batch, inference)
    assert after["weights_digest"] == before["weights_digest"]
    with pytest.raises(FileNotFoundError):  # the simulation-only diagnostic is the one reader
        true_label_record(project, params, table, weights, batch)


def test_diagnostic_seeds_differ_from_the_record_seeds(tiny_project):
    params = load_params(tiny_project / "params.yaml", {"lookup_table.head_seeds": [1, 0, 3]})
    assert diagnostic_seeds(params) == [2, 4, 5]


def test_table_diagnostics_measure_repeatability_and_fidelity():
    records = [{"value": v} for v in (0.1, 0.2, 0.3, 0.4)] + [None]
    checks = [{"value_other_seeds": v, "value_true_labels": t}
              for v, t in ((0.11, 0.4), (0.21, 0.3), (0.29, 0.2), (0.41, 0.1))] + [{"value_other_seeds": 0.5}]
    out = table_diagnostics(records, checks)
    assert out["records"] == 4 and out["repeatability"] == pytest.approx(1.0)
    assert out["fidelity"] == pytest.approx(-1.0)  # ranks the batches the opposite way to the true labels
    assert out["seed_noise_std"] == pytest.approx(np.std([-0.01, -0.01, 0.01, -0.01], ddof=1) / np.sqrt(2))
    no_oracle = table_diagnostics(records, [{**c, "value_true_labels": None} for c in checks[:4]] + [None])
    assert no_oracle["fidelity"] is None and no_oracle["repeatability"] == pytest.approx(1.0)
    flat = table_diagnostics([{"value": 0.0}] * 3, [{"value_other_seeds": 0.0, "value_true_labels": 0.0}] * 3)
    assert flat["repeatability"] is None and flat["fidelity"] is None  # constant: no ranking to compare
    assert table_diagnostics(records[:2], checks[:2])["repeatability"] is None  # too few records


@pytest.mark.slow
def test_full_finetune_proxy_is_still_available_and_reproducible(tiny_project, tmp_path):
    from mgral_workspace.cycle_steps import train_cycle_detector

    params = load_params(tiny_project / "params.yaml", {"lookup_table.proxy": "full", "lookup_table.epochs": 1,
                                                        "lookup_table.value": "proxy"})
    weights = train_cycle_detector(tiny_project, params, 1).weights
    inference = infer_pool(tiny_project, weights, params.detector, 1)
    batch = PoolState.load(tiny_project).unlabeled_pool_ids.tolist()[:8]
    runs = [record_value(tiny_project, params, tmp_path / "table", f"record_{i}", weights, batch, inference)
            for i in range(2)]
    assert runs[0]["weights_digest"] == runs[1]["weights_digest"] and np.isfinite(runs[0]["value"])
    assert not (tmp_path / "table" / FEATURES_FILE).exists()  # the full proxy needs no head features
