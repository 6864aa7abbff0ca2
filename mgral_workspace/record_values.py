"""The value of one lookup-table record inside a cycle: which proxy, and how its shared parts are cached.

`lookup_table.proxy: head` (default) fine-tunes the final head layers on cached features
(`proxy_training.HeadProxy`): the features of L, the unlabeled pool and val under the cycle's
detector are computed once per cycle into `<table>/head_features.pt`, and every process that
computes records (a thread pool, Dask workers) loads that file once and builds its proxy from it.
`proxy: full` fine-tunes the whole detector with the Ultralytics trainer in a subprocess per record.

Records travel as ids and paths, never as tensors. Nothing here reads the oracle except
`true_label_record`, the simulation-only fidelity diagnostic, whose values selection never sees.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mgral_core.batch_design import designed_batches
from mgral_core.coverage import selection_coverage
from mgral_core.detections import DetectionValue, sampled_labels
from mgral_core.lookup_table import LookupRecord, mixed_batches, random_batches
from mgral_core.seeding import rng_for, seed_for
from mgral_core.shortlist import kmeans
from mgral_workspace.config import LookupTableParams, Params
from mgral_workspace.cycle_steps import ground_truth, pool_view
from mgral_backends import get_backend
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.inference_cache import InferenceResult, load_inference
from mgral_workspace.lookup_store import load_record, save_record
from mgral_formats.yolo import read_yolo_label
from mgral_workspace.pool import PoolState
from mgral_workspace.pool_summary import pool_digest
from mgral_workspace.project import load_project_info
from mgral_backends.ultralytics.detector import load_detection_model
from mgral_backends.ultralytics.proxy_training import (
    HeadProxy,
    cache_head_features,
    HeadTuneConfig,
    RecordScore,
    load_head_features,
    pseudo_targets,
    save_head_features,
    train_proxy_record_isolated,
)

FEATURES_FILE = "head_features.pt"
_proxies: dict[tuple, HeadProxy] = {}
_proxies_lock = threading.Lock()


def head_config(params: Params, seeds: Sequence[int] | None = None) -> HeadTuneConfig:
    """The HeadTuneConfig a cycle's records use, from params.yaml's lookup_table section."""
    t = params.lookup_table
    return HeadTuneConfig(trainable=t.head_trainable, epochs=t.head_epochs, lr=t.head_lr,
                          seeds=tuple(t.head_seeds if seeds is None else seeds), pseudo_conf=t.pseudo_conf,
                          pseudo_ignore=t.pseudo_ignore)


def diagnostic_seeds(params: Params) -> list[int]:
    """As many seeds as `head_seeds`, all different from them: the repeatability check's second draw."""
    used, seeds, candidate = set(params.lookup_table.head_seeds), [], 0
    while len(seeds) < len(used):
        if candidate not in used:
            seeds.append(candidate)
        candidate += 1
    return seeds


def cache_cycle_features(project_dir: str | Path, params: Params, weights: str | Path, table_dir: Path,
                         progress: Callable[[int], None] | None = None) -> Path:
    """Write `<table_dir>/head_features.pt` (L, unlabeled pool, val) once; a re-run reuses a complete file."""
    path = Path(table_dir) / FEATURES_FILE
    pool = PoolState.load(project_dir)
    ids = list(dict.fromkeys([*pool.labeled_pool_ids.tolist(), *pool.unlabeled_pool_ids.tolist(),
                              *pool.eval_ids("val").tolist()]))
    if path.exists():
        try:
            load_head_features(path).rows(ids)
            return path
        except (KeyError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):
            path.unlink()  # stale (another pool) or unreadable: recompute
    project = Path(project_dir)
    features = get_backend(params.detector).head_features(weights, [project / f for f in pool.files(ids)], ids,
                                                          progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_head_features(path, features)


def cycle_proxy(project_dir: str | Path, params: Params, weights: str | Path, table_dir: Path) -> HeadProxy:
    """This process's HeadProxy of the cycle, built once from the cached features (thread-safe)."""
    path = Path(table_dir) / FEATURES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: head features of this cycle are missing; cache_cycle_features first")
    key = (str(Path(project_dir).resolve()), str(weights), str(path), path.stat().st_mtime_ns, head_config(params))
    with _proxies_lock:
        proxy = _proxies.get(key)
        if proxy is None:
            _proxies.clear()  # one cycle at a time per process: drop the previous cycle's features
            pool = PoolState.load(project_dir)
            labeled, val = pool.labeled_pool_ids.tolist(), pool.eval_ids("val").tolist()
            proxy = get_backend(params.detector).head_proxy(
                weights, load_head_features(path), ground_truth(project_dir, pool, labeled),
                ground_truth(project_dir, pool, val), head_config(params))
            _proxies[key] = proxy
    return proxy


def record_value(project_dir: str | Path, params: Params, table_dir: Path, record_id: str, weights: str | Path,
                 batch_ids: Sequence[str], inference_path: str | Path, seeds: Sequence[int] | None = None) -> dict:
    """{"value": val mAP50-95, "map50", "seconds", "weights_digest", ...} of the record L ∪ pseudo(B).

    With `lookup_table.value` 'expected_objects' or 'class_gain' the value is read from B's detections under
    the cycle's detector instead (`detection_value`; {"value", "seconds"}, no training).
    """
    if params.lookup_table.value != "proxy":
        return detection_value(project_dir, params, batch_ids, inference_path)
    if params.lookup_table.proxy == "full":
        return train_proxy_record_isolated(project_dir, params, Path(table_dir) / "work" / record_id, Path(weights),
                                           batch_ids, Path(inference_path))
    start = time.time()
    proxy = cycle_proxy(project_dir, params, weights, table_dir)
    detections = load_inference(inference_path).detections_by_id()
    draws = [proxy.record(targets, seeds=seeds) for targets in record_pseudo_targets(params, detections, batch_ids)]
    return _summary(draws[0] if len(draws) == 1 else RecordScore.mean(draws), time.time() - start)


def detection_value(project_dir: str | Path, params: Params, batch_ids: Sequence[str],
                    inference_path: str | Path) -> dict:
    """{"value", "seconds"} of B under `lookup_table.value` 'expected_objects' or 'class_gain', read from the
    cycle's pool inference (no training); KeyError naming an image the inference does not hold."""
    start = time.time()
    inference = load_inference(inference_path)
    known = set(inference.ids.tolist())
    missing = [i for i in batch_ids if str(i) not in known]
    if missing:
        raise KeyError(f"{inference_path}: no detections for {len(missing)} of the batch's images, e.g. {missing[0]}")
    value = _detection_value(project_dir, params, inference, batch_ids)(batch_ids)
    return {"value": value, "seconds": round(time.time() - start, 2)}


def _detection_value(project_dir: str | Path, params: Params, inference: InferenceResult,
                     ids: Sequence[str] | None = None) -> DetectionValue:
    """`lookup_table.value` (expected_objects or class_gain) over these images of the cycle's pool inference
    (default: all of them); one formula for a record's value and for the exact reward. With
    `class_gain_groups` > 1 in use this cycle (`groups_in_use`) the groups are clusters of the whole
    inference's embeddings, so a batch's value does not depend on which other images it was built over."""
    t = params.lookup_table
    detections = inference.detections_by_id()
    ids = list(detections) if ids is None else [str(i) for i in ids]
    chosen = {i: detections[i] for i in ids}
    if t.value != "class_gain":
        return DetectionValue(chosen, t.value, t.expected_floor)
    num_classes = len(load_project_info(project_dir).class_names)
    n_groups = groups_in_use(project_dir, params, inference)
    if n_groups == 1:
        return DetectionValue(chosen, t.value, t.expected_floor, num_classes,
                              labeled_class_counts(project_dir, num_classes))
    group_of = image_groups(inference, t)
    weights = np.bincount(list(group_of.values()), minlength=n_groups) / len(group_of)  # (G,) shares of the pool
    return DetectionValue(chosen, t.value, t.expected_floor, num_classes,
                          labeled_class_counts(project_dir, num_classes, group_of, n_groups),
                          np.array([group_of[i] for i in ids], np.int64), weights)


_cycle_cache: dict[tuple, object] = {}
_cycle_cache_lock = threading.Lock()


def _cached(kind: str, inference: InferenceResult, settings: tuple, compute: Callable,
            project_dir: str | Path | None = None):
    """compute() once per (kind, inference, settings[, project and its pool state]) in this process: every
    record of a cycle asks for the same groups and the same coverage gap, and k-means over a large pool takes
    seconds."""
    pool_csv = None if project_dir is None else Path(project_dir).resolve() / "pool.csv"
    state = pool_digest(pool_csv.read_bytes()) if pool_csv is not None and pool_csv.exists() else ""
    key = (kind, str(pool_csv), state,  # the pool's state by its bytes (PoolState's digest), not its mtime's tick
           inference.digest, settings)
    with _cycle_cache_lock:
        if key in _cycle_cache:
            return _cycle_cache[key]
    value = compute()
    with _cycle_cache_lock:
        if len(_cycle_cache) > 16:
            _cycle_cache.clear()
        _cycle_cache[key] = value
    return value


def labeled_coverage_gap(project_dir: str | Path, params: Params, inference: InferenceResult) -> float:
    """The labeled set's coverage gap this cycle (before its batch): the total variation distance between its
    mix over `selection.coverage_clusters` k-means clusters of this cycle's embeddings and the pool's,
    clustered as this cycle's coverage warning clusters them (`selection.coverage_metrics`). The previous
    cycle's warning measured L with that batch on the previous detector's embeddings, so the two can differ
    (the built-in benchmark: 0.29 there, 0.19 here, for one labeled set)."""
    s = params.selection

    def compute() -> float:
        pool = PoolState.load(project_dir)
        labeled, unlabeled = inference.subset(pool.labeled_pool_ids), inference.subset(pool.unlabeled_pool_ids)
        return selection_coverage(labeled.embeddings, unlabeled.embeddings, np.zeros(0, np.int64),
                                  s.coverage_clusters, seed_for(s.seed, pool.current_cycle + 1, "coverage")
                                  ).labeled_gap

    return _cached("coverage_gap", inference, (s.coverage_clusters, s.seed), compute, project_dir)


def groups_in_use(project_dir: str | Path, params: Params, inference: InferenceResult) -> int:
    """G of the class gain this cycle: `lookup_table.class_gain_groups`, or 1 when `class_gain_groups_on` is
    'coverage_warning' and the labeled set's coverage gap is at most `selection.coverage_warn`."""
    t = params.lookup_table
    if t.class_gain_groups == 1 or t.class_gain_groups_on == "always":
        return t.class_gain_groups
    gap = labeled_coverage_gap(project_dir, params, inference)
    return t.class_gain_groups if gap > params.selection.coverage_warn else 1


def image_groups(inference: InferenceResult, t: LookupTableParams) -> dict[str, int]:
    """{image id: group} for `class_gain_groups`: k-means clusters of the cycle's pool embeddings (labeled and
    unlabeled images alike), seeded by the section's seed; the same groups for every record of the cycle."""
    if t.class_gain_groups > len(inference.ids):
        raise ValueError(f"lookup_table.class_gain_groups is {t.class_gain_groups}, more than the "
                         f"{len(inference.ids)} images of the pool inference")
    seed = seed_for(t.seed, 0, "class_gain_groups")

    def compute() -> dict[str, int]:
        _, labels = kmeans(inference.embeddings, t.class_gain_groups, seed=seed)
        return dict(zip(inference.ids.tolist(), labels.tolist()))

    return _cached("groups", inference, (t.class_gain_groups, seed), compute)


def labeled_class_counts(project_dir: str | Path, num_classes: int, group_of: dict[str, int] | None = None,
                         n_groups: int = 1) -> np.ndarray:
    """(C,) the labeled objects of each class in L (the pool's labeled images; val and test not included);
    (G, C) per group of `group_of` ({image id: group in [0, n_groups)}) when it is given."""
    pool = PoolState.load(project_dir)
    labeled = np.zeros(num_classes if group_of is None else (n_groups, num_classes), np.float64)
    for image_id, (_, classes) in ground_truth(project_dir, pool, pool.labeled_pool_ids.tolist()).items():
        if group_of is None:
            np.add.at(labeled, np.asarray(classes, np.int64), 1.0)
        elif image_id not in group_of:
            raise KeyError(f"labeled image {image_id!r} is not in the cycle's pool inference, so it has no group "
                           "for lookup_table.class_gain_groups")
        else:
            np.add.at(labeled[group_of[image_id]], np.asarray(classes, np.int64), 1.0)
    return labeled


def pool_detection_value(project_dir: str | Path, params: Params, inference_path: str | Path) -> DetectionValue:
    """The cycle's detection value (`lookup_table.value`) over every image of its pool inference, computed once:
    the reward of `reward.estimator: exact`. It gives every batch the value `detection_value` gives it."""
    return _detection_value(project_dir, params, load_inference(inference_path))


def record_pseudo_targets(params: Params, detections: dict, batch_ids: Sequence[str]) -> list[dict]:
    """B's pseudo-labels for one record: one set (`pseudo_labels: threshold`, the detections >= pseudo_conf) or
    `pseudo_draws` sets drawn from the detector's predictive distribution (`sampled`; common random numbers:
    an image's draw d is the same in every record)."""
    t = params.lookup_table
    if t.pseudo_labels == "threshold":
        return [pseudo_targets(detections, batch_ids, t.pseudo_conf)]
    return [{i: sampled_labels(detections[i], str(i), draw, seed_for(t.seed, 0, "pseudo_labels"), t.pseudo_ignore)
             for i in batch_ids} for draw in range(t.pseudo_draws)]


def true_label_record(project_dir: str | Path, params: Params, table_dir: Path, weights: str | Path,
                      batch_ids: Sequence[str]) -> dict:
    """Simulation-only fidelity reference: the same record with the oracle's labels of B (head proxy).

    A diagnostic written beside the table and logged to MLflow; selection never reads it.
    """
    info, pool = load_project_info(project_dir), PoolState.load(project_dir)
    if not info.simulate:
        raise ValueError(f"{project_dir}: fidelity needs the oracle, which only simulation projects have")
    table = pool.table.set_index("image_id")
    truth = {i: read_yolo_label(info.oracle_dir / f"{i}.txt", int(table.loc[i, "width"]), int(table.loc[i, "height"]))
             for i in batch_ids}
    start = time.time()
    score = cycle_proxy(project_dir, params, weights, table_dir).record(truth, pseudo=False)
    return _summary(score, time.time() - start)


def lookup_record(project_dir: str | Path, params: Params, table_dir: Path, record_index: int,
                  batch_ids: Sequence[str], weights: str | Path, inference_path: str | Path,
                  design: dict | None = None, worker: str | None = None) -> dict:
    """Record `record_NNN` of a table: computed and saved (`lookup_store.save_record`), or read back if finished.

    Returns {"record_id", "value", **extras}; "reused" is True for a record found finished. `design`
    ({"kind", "source", "swap_fraction"} of the batch, from `record_plan`) and `worker` go to the extras.
    """
    record_id = f"record_{record_index:03d}"
    done = load_record(table_dir, record_id)
    if done is not None:
        return {"record_id": record_id, "value": done.value, **done.extras, "reused": True}
    result = record_value(project_dir, params, table_dir, record_id, weights, batch_ids, inference_path)
    value = result.pop("value")
    if worker is not None:
        result["worker"] = worker
    result.update({name: detail for name, detail in (design or {}).items() if name != "ids"})
    save_record(table_dir, LookupRecord(record_id, np.asarray(batch_ids),
                                        load_inference(inference_path).subset(batch_ids).embeddings, value, result))
    return {"record_id": record_id, "value": value, **result}


def record_check(project_dir: str | Path, params: Params, table_dir: Path, record_index: int,
                 batch_ids: Sequence[str], weights: str | Path, inference_path: str | Path) -> dict:
    """The signal-to-noise check of record NNN: its value under `diagnostic_seeds` and, in simulation, with
    the oracle's labels of its batch; written to `<table>/diagnostics/record_NNN.json` (reused when there).

    A diagnostic: the estimator and the agent never read it.
    """
    record_id = f"record_{record_index:03d}"
    path = Path(table_dir) / "diagnostics" / f"{record_id}.json"
    if path.exists():
        return json.loads(path.read_text())
    other = record_value(project_dir, params, table_dir, record_id, weights, batch_ids, inference_path,
                         seeds=diagnostic_seeds(params))
    out = {"record_id": record_id, "value_other_seeds": other["value"], "value_true_labels": None}
    if load_project_info(project_dir).simulate:
        out["value_true_labels"] = true_label_record(project_dir, params, table_dir, weights, batch_ids)["value"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, out)
    return out


def labeled_only_record(project_dir: str | Path, params: Params, table_dir: Path, weights: str | Path) -> dict:
    """The head-proxy record of L alone (no batch): the reference a record's gain is measured from."""
    start = time.time()
    score = cycle_proxy(project_dir, params, weights, table_dir).record({})
    return _summary(score, time.time() - start)


def _summary(score, seconds: float) -> dict:
    return {"value": score.map50_95, "map50": score.map50, "val_loss": score.val_loss,
            "train_loss_first": score.train_loss_first, "train_loss_last": score.train_loss_last,
            "seconds": round(seconds, 2), "weights_digest": score.digest}


def record_plan(project_dir: str, params: Params, cycle: int, budget: int,
                inference_path: str | None = None) -> list[dict]:
    """The R record batches of this cycle with what each is: [{"ids", "kind", "source", "swap_fraction"}].

    Fixed by seed and cycle, so a re-run gets the same ones. `lookup_table.batch_sampling`: 'random'
    (kind 'random'), 'mixed' (kind 'mixed': batches of varying cluster mix) or 'designed' (the
    baselines' proposals, mixtures and crosses of them, random batches: `batch_design.designed_batches`
    on the cycle's pool view, from the lookup-batches stream). Mixed and designed need the cycle's
    pool inference (`inference_path`).
    """
    candidates = PoolState.load(project_dir).unlabeled_pool_ids
    k, t = min(budget, len(candidates)), params.lookup_table
    seed = seed_for(t.seed, cycle, "lookup_batches")
    if t.batch_sampling == "random":
        return [_planned(b.tolist(), "random", str(i)) for i, b in enumerate(random_batches(candidates, k, t.records,
                                                                                             seed=seed))]
    if inference_path is None:
        raise ValueError(f"lookup_table.batch_sampling: {t.batch_sampling} needs the cycle's pool inference")
    if t.batch_sampling == "designed":
        view = pool_view(project_dir, Path(inference_path))
        designed = designed_batches(view, k, t.records, rng_for(t.seed, cycle, "lookup_batches"),
                                    t.design_proposers(), t.design_settings())
        return [_planned(c.ids, c.kind, c.source, c.swap_fraction) for c in designed]
    embeddings = load_inference(inference_path).subset(list(candidates)).embeddings  # (N, D)
    return [_planned(b.tolist(), "mixed", str(i)) for i, b in enumerate(
        mixed_batches(candidates, embeddings, k, t.records, seed, t.mix_clusters, t.mix_concentration))]


def _planned(ids, kind: str, source: str, swap_fraction: float | None = None) -> dict:
    return {"ids": [str(i) for i in ids], "kind": kind, "source": source, "swap_fraction": swap_fraction}


def record_batches(project_dir: str, params: Params, cycle: int, budget: int,
                   inference_path: str | None = None) -> list[list[str]]:
    """The ids of `record_plan`'s batches."""
    return [planned["ids"] for planned in record_plan(project_dir, params, cycle, budget, inference_path)]


def build_head_proxy(project_dir: str | Path, weights: str | Path, candidate_ids: Sequence[str], *, imgsz: int,
                     config: HeadTuneConfig, val_ids: Sequence[str] | None = None, batch: int = 64,
                     cache_path: str | Path | None = None) -> HeadProxy:
    """The cycle's HeadProxy: features of L, the candidates and val under `weights`, labels of L and val.

    Labels come from the project's visible label files (`cycle_steps.ground_truth`), never from the
    oracle. With `cache_path`, features are loaded from it when it exists (they must cover the
    ids asked for), else computed and saved. `val_ids` narrows the validation images (default:
    the whole val split).
    """
    project = Path(project_dir)
    pool = PoolState.load(project)
    labeled_ids = pool.labeled_pool_ids.tolist()
    val_ids = pool.eval_ids("val").tolist() if val_ids is None else list(val_ids)
    model = load_detection_model(weights)
    if cache_path is not None and Path(cache_path).exists():
        features = load_head_features(cache_path)
    else:
        ids = list(dict.fromkeys([*labeled_ids, *candidate_ids, *val_ids]))
        features = cache_head_features(model, [project / f for f in pool.files(ids)], ids, imgsz=imgsz, batch=batch)
        if cache_path is not None:
            save_head_features(cache_path, features)
    return HeadProxy(model, features, ground_truth(project, pool, labeled_ids), ground_truth(project, pool, val_ids),
                     config)
