"""Result cells of a benchmark campaign: what is left to run, cells recovered from a finished cycle, progress."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mgral_workspace.config import params_from_dict

from mgral_workspace import benchmark as bench
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.cycle_steps import cycle_dir, oracle_annotate
from mgral_workspace.config import load_params
from mgral_workspace.pool import PoolState
from tests.conftest import write_params


def _evaluated(project, cycle, value):
    write_json_atomic(cycle_dir(project, cycle) / "evaluation.json",
                      {"split": "test", "map50_95": value, "map50": 2 * value, "per_class": {}, "images": 16,
                       "labeled": len(PoolState.load(project).labeled_pool_ids), "cycle": cycle})


def test_todo_resumes_after_the_last_finished_cycle(tiny_project):
    assert bench.campaign_todo(tiny_project, "random", 0, 2, "c1") == [1, 2, 3]
    _evaluated(tiny_project, 1, 0.25)
    assert bench.campaign_todo(tiny_project, "random", 0, 2, "c1") == [1, 2, 3]  # evaluated, batch not labeled yet
    oracle_annotate(tiny_project, PoolState.load(tiny_project).unlabeled_pool_ids[:8], 1)
    # killed after cycle 1 labeled its batch, before its cell was written: the cell comes from the evaluation
    assert bench.campaign_todo(tiny_project, "random", 0, 2, "c1") == [2, 3]
    cell = json.loads(bench.cell_path(tiny_project, 1).read_text())
    assert (cell["strategy"], cell["seed"], cell["cycle"], cell["labeled"], cell["map50_95"]) == ("random", 0, 1, 20, 0.25)
    bench.mark_running(tiny_project, 2)
    bench.save_cell(tiny_project, "random", 0, {"cycle": 2, "labeled": 28, "map50_95": 0.3, "map50": 0.5}, "c1")
    assert not (tiny_project / "cells" / "running.json").exists()
    with pytest.raises(ValueError, match="pool has 1 labeled batches but result cells are missing for cycles"):
        bench.campaign_todo(tiny_project, "random", 0, 2, "c1")  # a cell for cycle 2 without its labeled batch


def test_progress_counts_done_running_and_left(tmp_path, tiny_project):
    out = tmp_path / "bench"
    write_json_atomic(out / "plan.json", {"strategies": ["random", "coreset"], "seeds": [0], "cycles": 1, "code": "c"})
    project = bench.run_dir(out, "random", 0)
    shutil.copytree(tiny_project, project)
    bench.save_cell(project, "random", 0, {"cycle": 1, "labeled": 20, "map50_95": 0.1, "map50": 0.2}, "c")
    bench.mark_running(project, 2)
    progress = bench.benchmark_progress(out)
    assert progress == {"total": 4, "done": 1, "running": ["random seed 0 cycle 2"], "left": 2}
    assert bench.progress_line(progress) == ("benchmark progress: 1/4 cells done, 1 running (random seed 0 cycle 2), "
                                             "2 left")
    with pytest.raises(ValueError, match="3 benchmark cells are not finished: random seed 0 cycle 2"):
        bench.benchmark_rows(out, ["random", "coreset"], [0], 1)


def test_unfinished_dataset_or_copy_is_made_again_and_another_spec_refused(tmp_path, tiny_project):
    from mgral_workspace.benchmark_reuse import BenchmarkKeyError
    from mgral_workspace.config import BenchmarkProfile, Params

    out, profile = tmp_path / "bench", BenchmarkProfile(n_pool=10, image_size=32)
    params = Params().model_copy(update={"dataset": Params().dataset.model_copy(update={"n_val": 2, "n_test": 2})})
    (out / "dataset" / "images").mkdir(parents=True)  # killed mid-generation: no spec.json yet
    dataset = bench.ensure_dataset(out, params, profile)
    assert len(list((dataset / "images" / "train").iterdir())) == 10 and (dataset / "spec.json").exists()
    with pytest.raises(BenchmarkKeyError, match="generated from another spec"):
        bench.ensure_dataset(out, params, BenchmarkProfile(n_pool=12, image_size=32))

    seed_dir = tmp_path / "runs" / "seed_0"
    shutil.copytree(tiny_project, seed_dir / "base")
    (seed_dir / ".random.copying").mkdir()  # killed mid-copy
    project = bench.prepare_strategy_run(seed_dir / "base", "random", Params(), None)
    assert (project / "pool.csv").exists() and not (seed_dir / ".random.copying").exists()
    variant = bench.prepare_strategy_run(seed_dir / "base", "random@agent.lr=0.01", Params(), None)
    assert "lr: 0.01" in (variant / "params.yaml").read_text()
    with pytest.raises(ValueError, match="strategy 'random@agent.nope=1'"):
        bench.variant_params(Params(), "random@agent.nope=1")
    with pytest.raises(ValueError, match="unknown strategy 'random;mgral'.*separated by commas"):
        bench.variant_params(Params(), "random;mgral@agent.lr=0.01")  # another separator: refused before training
    with pytest.raises(ValueError, match="unknown strategy 'rnd'"):
        params_from_dict({"benchmark": {"quick": {"strategies": ["random", "rnd@agent.lr=0.01"]}}})


def test_campaigns_and_records_are_not_both_sent_to_dask(tmp_path, monkeypatch):
    from mgral_workspace.config import BenchmarkProfile, ConfigError, Params

    monkeypatch.delenv("MGRAL_DASK_ADDRESS", raising=False)
    monkeypatch.delenv("MGRAL_BENCHMARK_DASK_ADDRESS", raising=False)
    params = Params().model_copy(update={"benchmark": Params().benchmark.model_copy(update={"runner": "dask"})})
    assert bench.check_benchmark(tmp_path, params, BenchmarkProfile(), ["random"], [0]) == {0: "new"}
    monkeypatch.setenv("MGRAL_DASK_ADDRESS", "tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="benchmark.runner and lookup_table.runner are both Dask"):
        bench.check_benchmark(tmp_path, params, BenchmarkProfile(), ["random"], [0])
    assert not any(tmp_path.iterdir())  # a check writes nothing


def test_benchmark_runs_load_in_the_training_process(tmp_path):
    from mgral_workspace.config import BenchmarkProfile, Params

    assert Params().detector.threads == 0  # one torch thread per core elsewhere (docs/PERFORMANCE.md)
    loading = Params().model_copy(update={"detector": Params().detector.model_copy(update={"workers_on_cpu": True})})
    run = BenchmarkProfile().apply(loading, 0, tmp_path)
    assert run.detector.workers_on_cpu is False  # same loading on threads and on Dask workers, which may not fork
    assert run.detector.threads is None  # campaigns share the cores


def _fake_params(monkeypatch, backend):
    from mgral_backends import BACKENDS
    from mgral_workspace.config import Params

    monkeypatch.setitem(BACKENDS, "fake", lambda params: backend)
    params = Params()
    return params.model_copy(update={"detector": params.detector.model_copy(update={"backend": "fake"})})


def _trained_on(weights) -> dict:
    return json.loads(open(weights).read())  # the fake "weights" describe the training call


def test_a_repeat_retrains_the_cycle_on_its_own_images_with_another_seed(monkeypatch, tiny_project):
    from tests.backends.fake_detector import FakeDetectorBackend
    from mgral_workspace.cycle_steps import train_cycle_detector, train_repeat_detector
    from mgral_workspace.pool import PoolStateError

    backend = FakeDetectorBackend(3)
    params = _fake_params(monkeypatch, backend)
    first = train_cycle_detector(tiny_project, params, 1, log=lambda m: None)
    oracle_annotate(tiny_project, PoolState.load(tiny_project).unlabeled_pool_ids[:8], 1)
    own = _trained_on(train_cycle_detector(tiny_project, params, 2, log=lambda m: None).weights)
    oracle_annotate(tiny_project, PoolState.load(tiny_project).unlabeled_pool_ids[:8], 2)  # the pool goes on growing
    repeats = [_trained_on(train_repeat_detector(tiny_project, params, 2, r, log=lambda m: None).weights)
               for r in (1, 2)]
    for repeat in repeats:  # cycle 2's 28 images from cycle 1's weights, not the 36 labeled since
        assert (repeat["train_images"], repeat["init_weights"], repeat["epochs"]) == (
            own["train_images"], own["init_weights"], own["epochs"]) == (28, str(first.weights), own["epochs"])
    assert len({own["seed"], repeats[0]["seed"], repeats[1]["seed"]}) == 3
    assert train_repeat_detector(tiny_project, params, 2, 1).weights.parent.name == "repeat_1"  # reused
    assert backend.calls.count("train") == 4
    with pytest.raises(ValueError, match="repeats are numbered from 1"):
        train_repeat_detector(tiny_project, params, 2, 0)
    with pytest.raises(PoolStateError, match="cycle 3 has not trained its detector"):
        train_repeat_detector(tiny_project, params, 3, 1)
    trained = cycle_dir(tiny_project, 2) / "detector" / "trained.json"
    write_json_atomic(trained, {**json.loads(trained.read_text()), "labeled": 27})
    shutil.rmtree(cycle_dir(tiny_project, 2) / "repeats")
    with pytest.raises(PoolStateError, match="cycle 2 trained on 27 labeled images but the pool has 28"):
        train_repeat_detector(tiny_project, params, 2, 1)


def test_repeated_fine_tunes_are_persisted_counted_and_averaged(monkeypatch, tmp_path, tiny_project):
    from tests.backends.fake_detector import FakeDetectorBackend
    from mgral_workspace.cycle_steps import evaluate_split, train_cycle_detector

    class Recording(FakeDetectorBackend):  # which epochs each training was given
        epochs: list[int] = []

        def train(self, *args, epochs, **kwargs):
            self.epochs.append(epochs)
            return super().train(*args, epochs=epochs, **kwargs)

    backend = Recording(3)
    _fake_params(monkeypatch, backend)
    out = tmp_path / "bench"
    write_json_atomic(out / "plan.json", {"strategies": ["random"], "seeds": [0], "cycles": 1,
                                          "finetune_repeats": 3, "code": "c"})
    project = bench.run_dir(out, "random", 0)
    shutil.copytree(tiny_project, project)
    # the campaign's own parameters (a variant's override included) are what its repeats train with
    write_params(project / "params.yaml", detector__backend="fake", detector__finetune_epochs=3)
    params = load_params(project / "params.yaml")
    train_cycle_detector(project, params, 1, log=lambda m: None)
    bench.save_cell(project, "random", 0, {"cycle": 1, "labeled": 20, "map50_95": 0.1, "map50": 0.2}, "c")
    oracle_annotate(project, PoolState.load(project).unlabeled_pool_ids[:8], 1)
    weights = train_cycle_detector(project, params, 2, log=lambda m: None).weights
    assert bench.repeats_todo(project, 1, 3) == []  # nothing before the cycle's own cell
    bench.save_cell(project, "random", 0, {"cycle": 2, "labeled": 28, "map50_95": 0.3, "map50": 0.5}, "c")
    assert bench.repeats_todo(project, 1, 3) == [(2, 1), (2, 2)] and bench.repeats_todo(project, 1, 1) == []
    assert bench.progress_line(bench.benchmark_progress(out)).endswith("0 left; repeated fine-tunes 0/2")
    bench.mark_running(project, 2, repeat=1)  # a repeat in training is shown, and is no cell
    progress = bench.benchmark_progress(out)
    assert progress["running"] == ["random seed 0 cycle 2 repeat 1"] and progress["left"] == 0
    with pytest.raises(ValueError, match="2 repeated fine-tunes are not finished: random seed 0 cycle 2 repeat 1"):
        bench.benchmark_rows(out, ["random"], [0], 1, repeats=3)

    results = [bench.run_finetune_repeat(project, "random", 0, 2, r, "c", log=lambda m: None) for r in (1, 2)]
    fake_test = evaluate_split(project, weights, params, "test").map50_95  # the fake's predictions ignore weights
    assert [(r["repeat"], r["labeled"], r["map50_95"]) for r in results] == [(1, 28, fake_test), (2, 28, fake_test)]
    assert not (cycle_dir(project, 2) / "repeats" / "repeat_1").exists()  # weights dropped, result kept
    assert not (project / "cells" / "running.json").exists()  # the marker went with the last repeat
    assert backend.epochs[1:] == [3, 3, 3]  # cycle 2 and its two repeats: the campaign's finetune_epochs
    trainings = backend.calls.count("train")
    assert bench.run_finetune_repeat(project, "random", 0, 2, 1, "c") == results[0]  # persisted: not rerun
    assert backend.calls.count("train") == trainings and bench.repeats_todo(project, 1, 3) == []
    assert bench.benchmark_progress(out)["repeats_done"] == 2
    rows = bench.benchmark_rows(out, ["random"], [0], 1, repeats=3)
    assert rows[0]["map50_95"] == 0.1  # cycle 1, the seed's shared base, is not repeated
    assert rows[1]["map50_95"] == pytest.approx((0.3 + 2 * fake_test) / 3)
    assert bench.benchmark_rows(out, ["random"], [0], 1)[1]["map50_95"] == 0.3  # without repeats: the cell alone
    fine_tunes = pd.DataFrame(bench.finetune_results(out, ["random"], [0], 1, 3))
    assert fine_tunes["repeat"].tolist() == [0, 1, 2]
    from mgral_workspace.reports import training_noise_line
    sd = float(np.std([0.3, fake_test, fake_test], ddof=1))
    assert f"mean of 3 fine-tunes on the same images with other training seeds (1 cells)" in training_noise_line(
        fine_tunes) and f"{sd:.4f} test map50_95" in training_noise_line(fine_tunes)
