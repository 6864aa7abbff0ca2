"""The oracle ceiling in a project: it scores candidates with the oracle's true labels, is refused where there
is no oracle, and is the only strategy that reads the oracle (the leakage test exempts it by name alone)."""

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest

import mgral_workspace.cycle_steps as cycle_steps
import mgral_workspace.record_values as record_values
from flows.cycle import mgral_cycle
from mgral_core.lookup_table import LookupRecord
from mgral_core.strategies import BASELINE_STRATEGIES, STRATEGY_NAMES, oracle_readers
from mgral_formats import load_dataset
from mgral_workspace.config import ConfigError, load_params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.lookup_store import save_record
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project, load_project_info
from mgral_workspace.selection import OracleRefusedError, ceiling_dir, lookup_dir, select_batch
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset
from tests.backends.fake_detector import FakeDetectorBackend, FakeRecordProxy
from tests.conftest import write_params

EXEMPT = {"oracle_best_of_n"}  # by name: the ceiling is meant to read the oracle, nothing else may


class TruthReadingProxy(FakeRecordProxy):
    """The fake proxy, except that a true-label record's value counts the boxes it was given: the oracle's
    labels then decide what the ceiling picks, as real training would."""

    def record(self, batch, seeds=None, pseudo=True):
        score = super().record(batch, seeds, pseudo)
        if pseudo:
            return score
        boxes = float(sum(len(classes) for _, classes in batch.values()))
        return dataclasses.replace(score, map50_95=boxes, map50=boxes)


class TruthReadingBackend(FakeDetectorBackend):
    def head_proxy(self, weights, features, labeled, val, config):
        self.calls.append("head_proxy")
        return TruthReadingProxy(features, list(labeled), config)


@pytest.fixture
def fake_cycle(tiny_project, monkeypatch, tmp_path):
    """(project, params, weights, inference) of cycle 1 on the fake backend, with MGRAL's lookup table filled."""
    fake = TruthReadingBackend()
    monkeypatch.setattr(cycle_steps, "get_backend", lambda detector: fake)
    monkeypatch.setattr(record_values, "get_backend", lambda detector: fake)
    params = load_params(tiny_project / "params.yaml", {"agent.iterations": 3, "oracle.candidates": 12})
    weights = str(cycle_steps.train_cycle_detector(tiny_project, params, 1, log=lambda _: None).weights)
    inference = str(cycle_steps.infer_pool(tiny_project, weights, params.detector, 1))
    table = lookup_dir(tiny_project, 1)
    record_values.cache_cycle_features(tiny_project, params, weights, table)
    embeddings = load_inference(inference)
    for r, batch in enumerate(record_values.record_batches(str(tiny_project), params, 1, 8)):
        value = record_values.record_value(tiny_project, params, table, f"record_{r:03d}", weights, batch, inference)
        save_record(table, LookupRecord(f"record_{r:03d}", np.asarray(batch), embeddings.subset(batch).embeddings,
                                        value["value"]))
    return tiny_project, params, weights, inference


def select(project, params, inference, weights, strategy):
    """A fresh cycle-1 selection by `strategy` (the kept selection.json of an earlier call removed)."""
    (cycle_steps.cycle_dir(project, 1) / "selection.json").unlink(missing_ok=True)
    shutil.rmtree(ceiling_dir(project, 1) / "values", ignore_errors=True)
    return select_batch(project, params, inference, 1, strategy, 8, weights)


def test_ceiling_picks_the_candidate_with_the_best_true_label_value(fake_cycle):
    project, params, weights, inference = fake_cycle
    ids, outputs = select(project, params, inference, weights, "oracle_best_of_n")
    scored = json.loads((ceiling_dir(project, 1) / "candidates.json").read_text())
    candidates = scored["candidates"]
    assert len(candidates) == 12 and [c["kind"] for c in candidates[:len(BASELINE_STRATEGIES)]] == \
        ["proposal"] * len(BASELINE_STRATEGIES)
    assert [c["source"] for c in candidates[:len(BASELINE_STRATEGIES)]] == list(BASELINE_STRATEGIES)
    info, table = load_project_info(project), PoolState.load(project).table.set_index("image_id")

    def oracle_boxes(batch):  # what the oracle holds for the batch: the value the fake proxy gives it
        return sum(len(record_values.read_yolo_label(info.oracle_dir / f"{i}.txt", int(table.loc[i, "width"]),
                                                     int(table.loc[i, "height"]))[1]) for i in batch)

    assert [c["value"] for c in candidates] == [float(oracle_boxes(c["ids"])) for c in candidates]
    assert ids == candidates[scored["chosen"]]["ids"] and oracle_boxes(ids) == max(c["value"] for c in candidates)
    assert outputs["metrics"]["oracle_chosen_value"] == max(c["value"] for c in candidates)
    random_mean = np.mean([c["value"] for c in candidates if c["kind"] == "random"])
    assert outputs["metrics"]["oracle_gap_vs_random"] == pytest.approx(max(c["value"] for c in candidates) - random_mean)
    distinct = {frozenset(c["ids"]) for c in candidates}
    assert len(list((ceiling_dir(project, 1) / "values").glob("*.json"))) == len(distinct)  # one file per batch
    assert candidates[0]["ids"] == select(project, params, inference, weights, "random")[0]  # random's own batch


def test_ceiling_resumes_from_its_scored_candidates(fake_cycle, monkeypatch):
    project, params, weights, inference = fake_cycle
    first, _ = select(project, params, inference, weights, "oracle_best_of_n")
    (cycle_steps.cycle_dir(project, 1) / "selection.json").unlink()  # interrupted after scoring, before saving
    monkeypatch.setattr("mgral_workspace.selection.true_label_record",
                        lambda *a, **k: pytest.fail("a scored candidate was trained again"))
    again, _ = select_batch(project, params, inference, 1, "oracle_best_of_n", 8, weights)
    assert again == first


def test_no_other_strategy_reads_the_oracle(fake_cycle, tmp_path):
    """Every strategy but the exempt one selects the same batch with the oracle intact, corrupted or deleted
    (a deleted oracle makes any read fail); the ceiling, run the same way, is caught reading it."""
    project, params, weights, inference = fake_cycle
    assert set(oracle_readers()) == EXEMPT  # exempt by name, and nothing else is exempt
    strategies = sorted(set(STRATEGY_NAMES) - EXEMPT)
    assert "mgral" in strategies and "typiclust" in strategies
    intact = {s: select(project, params, inference, weights, s)[0] for s in strategies}
    oracle = load_project_info(project).oracle_dir
    for label in oracle.glob("*.txt"):
        label.write_text("0 0.5 0.5 0.9 0.9\n" * 3)
    corrupted = {s: select(project, params, inference, weights, s)[0] for s in strategies}
    shutil.rmtree(oracle)
    deleted = {s: select(project, params, inference, weights, s)[0] for s in strategies}
    assert intact == corrupted == deleted and all(len(ids) == 8 for ids in intact.values())
    with pytest.raises(FileNotFoundError, match="oracle"):  # the test does catch a reader
        select(project, params, inference, weights, "oracle_best_of_n")


@pytest.fixture
def real_project(tmp_path):
    data = generate_dataset(SyntheticSpec(seed=1, image_size=64, n_pool=30, n_val=8, n_test=8), tmp_path / "data")
    for label in sorted((data / "labels" / "train").glob("*.txt"))[12:]:
        label.unlink()  # 12 labeled pool images, 18 unlabeled
    dataset, _ = load_dataset(data)
    project = init_project(tmp_path / "project", dataset, simulate=False, initial_labeled=0)
    write_params(project / "params.yaml", selection__strategy="oracle_best_of_n", tracking__version_pool=False)
    return project


def test_ceiling_is_refused_in_a_real_project_before_anything_trains(real_project):
    from prefect.logging import disable_run_logger

    with pytest.raises(OracleRefusedError, match="'oracle_best_of_n' is a simulation-only upper bound.*no oracle"):
        select_batch(real_project, load_params(real_project / "params.yaml"), "unused.npz", 1, "oracle_best_of_n", 4,
                     "unused.pt")
    with disable_run_logger(), pytest.raises(OracleRefusedError, match="labeled by people"):
        mgral_cycle.fn(str(real_project))  # the cycle flow's body, as `mgral cycle` runs it
    assert not (real_project / "cycles").exists()  # refused before the detector was trained


def test_oracle_params_are_validated(tmp_path):
    path = write_params(tmp_path / "params.yaml")
    assert load_params(path).oracle.to_settings().proposals is None  # every baseline
    cases = [({"oracle.candidates": 4}, re.escape(f"oracle: Value error, candidates (4) must be at least the number "
                                                  f"of proposals ({len(BASELINE_STRATEGIES)}: every baseline")),
             ({"oracle.candidates": 1}, "oracle.candidates: Input should be greater than or equal to 2"),
             ({"oracle.proposals": ["random", "mgral"]}, r"unknown baselines \['mgral'\]"),
             ({"oracle.proposals": ["random", "random"]}, "proposals must be distinct"),
             ({"oracle.proposals": []}, "mix_share > 0 needs proposals"),
             ({"oracle.swap_fraction": 1.0}, "oracle.swap_fraction: Input should be less than 1"),
             ({"oracle.mix_share": -0.1}, "oracle.mix_share: Input should be greater than or equal to 0")]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_params(path, overrides)
    settings = load_params(path, {"oracle.proposals": ["random", "typiclust"], "oracle.candidates": 5}).oracle
    assert settings.to_settings().proposals == ("random", "typiclust")
