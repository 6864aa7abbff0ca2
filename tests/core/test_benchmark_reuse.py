"""Benchmark results are reused only under the same key (settings + code version); anything else is refused or
copied only when finished and identical."""

import json

import pytest

from mgral_workspace.benchmark_reuse import (
    BenchmarkKeyError,
    claim_seed_dir,
    code_version,
    copy_finished,
    run_settings,
    same_key,
)
from mgral_workspace.config import Params


def _finished_run(seed_dir, name, params, code="c1"):
    claim_seed_dir(seed_dir, params, code)
    (seed_dir / name / "cells").mkdir(parents=True)
    (seed_dir / name / "cells" / "cycle_003.json").write_text("{}")
    (seed_dir / name / "pool.csv").write_text("image_id\n")


def _with(params, section, **values):
    return params.model_copy(update={section: getattr(params, section).model_copy(update=values)})


def test_identical_settings_are_copied_whatever_the_tracking(tmp_path):
    params = Params()
    _finished_run(tmp_path / "quick" / "seed_0", "random", params)
    elsewhere = _with(params, "tracking", uri="sqlite:////x.db")
    target = tmp_path / "ablation" / "seed_0"
    assert copy_finished(tmp_path / "quick" / "seed_0", target, "random", elsewhere, "c1", "cells/cycle_003.json")
    assert (target / "random" / "pool.csv").read_text() == "image_id\n"
    assert not list(target.glob(".*copying"))


def test_different_settings_code_or_unfinished_runs_are_not_copied(tmp_path):
    params = Params()
    source = tmp_path / "quick" / "seed_0"
    _finished_run(source, "random", params)
    (source / "mgral").mkdir()  # started, never finished
    target = tmp_path / "ablation" / "seed_0"
    assert not copy_finished(source, target, "random", _with(params, "detector", epochs=3), "c1", "cells/cycle_003.json")
    assert not copy_finished(source, target, "random", params, "c2", "cells/cycle_003.json")  # other code
    assert not copy_finished(source, target, "mgral", params, "c1", "cells/cycle_003.json")
    assert not (target / "random").exists() and not (target / "mgral").exists()
    assert not same_key(tmp_path / "nowhere", params, "c1")
    assert "tracking" not in run_settings(params) and "benchmark" not in run_settings(params)
    assert "detector" in run_settings(params)


def test_a_changed_parameter_is_refused_with_the_keys_that_differ(tmp_path):
    params = Params()
    seed_dir = tmp_path / "runs" / "seed_0"
    assert claim_seed_dir(seed_dir, params, "c1") == "new"
    (seed_dir / "base").mkdir()
    assert claim_seed_dir(seed_dir, _with(params, "tracking", uri="sqlite:////elsewhere.db"), "c1") == "same"
    assert claim_seed_dir(seed_dir, _with(params, "benchmark", runner="dask"), "c1") == "same"  # where it runs
    changed = _with(_with(params, "detector", epochs=3), "selection", budget=7)
    with pytest.raises(BenchmarkKeyError, match=r"detector\.epochs: 60 -> 3; selection\.budget: 100 -> 7") as err:
        claim_seed_dir(seed_dir, changed, "c1")
    assert "Nothing was retrained or deleted" in str(err.value) and str(seed_dir) in str(err.value)
    assert json.loads((seed_dir / "key.json").read_text())["settings"]["detector"]["epochs"] == 60  # untouched


def test_other_code_is_refused_unless_allowed_and_then_recorded(tmp_path):
    params = Params()
    seed_dir = tmp_path / "seed_0"
    claim_seed_dir(seed_dir, params, "c1")
    with pytest.raises(BenchmarkKeyError, match="other code .*version c1, this checkout is c2.*--allow-code-change"):
        claim_seed_dir(seed_dir, params, "c2")
    assert claim_seed_dir(seed_dir, params, "c2", allow_code_change=True) == "code changed (allowed)"
    assert json.loads((seed_dir / "key.json").read_text())["code"] == ["c1", "c2"]
    assert claim_seed_dir(seed_dir, params, "c2") == "same"
    assert not same_key(seed_dir, params, "c2")  # mixed code: never copied into another profile


def test_results_without_a_key_are_refused(tmp_path):
    seed_dir = tmp_path / "seed_0"
    (seed_dir / "base").mkdir(parents=True)
    (seed_dir / "settings.json").write_text("{}")  # the layout before keys
    with pytest.raises(BenchmarkKeyError, match="holds results but no key.json"):
        claim_seed_dir(seed_dir, Params(), "c1")
    (seed_dir / "key.json").write_text("{not json")
    with pytest.raises(BenchmarkKeyError, match="unreadable benchmark key"):
        claim_seed_dir(seed_dir, Params(), "c1")


def test_code_version_follows_the_sources(tmp_path):
    for package in ("mgral_core", "flows"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    (tmp_path / "docs").mkdir()
    first = code_version(tmp_path)
    assert code_version(tmp_path) == first and len(first) == 16
    (tmp_path / "docs" / "notes.py").write_text("not a results package\n")
    assert code_version(tmp_path) == first
    (tmp_path / "flows" / "a.py").write_text("x = 2\n")
    second = code_version(tmp_path)
    assert second != first
    (tmp_path / "mgral_core" / "weights.pt").write_bytes(b"shipped weights")  # data shipped in a package counts
    assert code_version(tmp_path) != second
    (tmp_path / "mgral_core" / "__pycache__").mkdir()
    third = code_version(tmp_path)
    (tmp_path / "mgral_core" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"cache")
    assert code_version(tmp_path) == third
    assert code_version() == code_version()  # this checkout


def test_a_weights_file_named_by_path_is_keyed_by_its_content(tmp_path):
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"first")
    params = _with(Params(), "detector", model=str(weights))
    seed_dir = tmp_path / "seed_0"
    claim_seed_dir(seed_dir, params, "c1")
    weights.write_bytes(b"retrained")  # same path, other weights
    with pytest.raises(BenchmarkKeyError, match=r"detector\.model_sha256: '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
        claim_seed_dir(seed_dir, params, "c1")


def test_a_parameter_added_since_is_no_difference_at_its_default_but_is_at_any_other_value(tmp_path):
    """Results made before a parameter existed stand for a run that leaves it at its default (with the code
    change allowed); a run that sets it otherwise is refused, naming it."""
    params = Params()
    seed_dir = tmp_path / "runs" / "seed_0"
    claim_seed_dir(seed_dir, params, "c1")
    (seed_dir / "base").mkdir()
    key = json.loads((seed_dir / "key.json").read_text())
    del key["settings"]["lookup_table"]["class_gain_groups"]  # as written before the parameter existed
    (seed_dir / "key.json").write_text(json.dumps(key))
    with pytest.raises(BenchmarkKeyError, match="made by other code"):
        claim_seed_dir(seed_dir, params, "c2")
    assert claim_seed_dir(seed_dir, params, "c2", allow_code_change=True) == "code changed (allowed)"
    assert claim_seed_dir(seed_dir, params, "c2") == "same"
    with pytest.raises(BenchmarkKeyError, match="lookup_table.class_gain_groups: '<unset>' -> 16"):
        claim_seed_dir(seed_dir, _with(params, "lookup_table", class_gain_groups=16), "c2", allow_code_change=True)
    key = json.loads((seed_dir / "key.json").read_text())
    key["settings"]["detector"]["removed_since"] = 3  # a parameter the old key has and this run lacks differs
    (seed_dir / "key.json").write_text(json.dumps(key))
    with pytest.raises(BenchmarkKeyError, match="detector.removed_since: 3 -> '<unset>'"):
        claim_seed_dir(seed_dir, params, "c2")
