"""Benchmark runs are copied across profiles only when finished and made with identical settings."""

from mgral_workspace.benchmark_reuse import copy_finished, run_settings, same_settings, write_seed_settings
from mgral_workspace.config import Params


def _finished_run(seed_dir, name, params):
    write_seed_settings(seed_dir, params)
    (seed_dir / name / "reports").mkdir(parents=True)
    (seed_dir / name / "reports" / "metrics.json").write_text("{}")
    (seed_dir / name / "pool.csv").write_text("image_id\n")


def test_identical_settings_are_copied_whatever_the_tracking(tmp_path):
    params = Params()
    _finished_run(tmp_path / "quick" / "seed_0", "random", params)
    elsewhere = params.model_copy(update={"tracking": params.tracking.model_copy(update={"uri": "sqlite:////x.db"})})
    target = tmp_path / "ablation" / "seed_0"
    assert copy_finished(tmp_path / "quick" / "seed_0", target, "random", elsewhere, "reports/metrics.json")
    assert (target / "random" / "pool.csv").read_text() == "image_id\n"
    assert not list(target.glob(".*copying"))


def test_different_settings_or_unfinished_runs_are_not_copied(tmp_path):
    params = Params()
    source = tmp_path / "quick" / "seed_0"
    _finished_run(source, "random", params)
    (source / "mgral").mkdir()  # started, never finished
    other = params.model_copy(update={"detector": params.detector.model_copy(update={"epochs": 3})})
    target = tmp_path / "ablation" / "seed_0"
    assert not copy_finished(source, target, "random", other, "reports/metrics.json")
    assert not copy_finished(source, target, "mgral", params, "reports/metrics.json")
    assert not (target / "random").exists() and not (target / "mgral").exists()
    assert not same_settings(tmp_path / "nowhere", params)
    assert "tracking" not in run_settings(params) and "detector" in run_settings(params)
