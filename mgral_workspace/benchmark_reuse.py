"""Reusing finished benchmark runs across profiles: a run is copied only when its settings are identical.

A benchmark directory holds `runs/seed_<s>/settings.json` (the run parameters of that seed, without
tracking and benchmark sections, which name the directory and the profile) next to `base/` (the
seed's initial project and first-cycle detector) and one project per strategy. Another profile with
the same settings for that seed (same dataset, detector, budget, cycles, table, agent...) can copy
the base and any finished strategy run instead of training them again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import Params


def run_settings(params: Params) -> dict:
    """What decides a benchmark run's results (everything but where it is tracked and which profile asked)."""
    return params.model_dump(mode="json", exclude={"tracking", "benchmark", "project_dir"})


def write_seed_settings(seed_dir: Path, params: Params) -> None:
    seed_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(seed_dir / "settings.json", run_settings(params))


def same_settings(seed_dir: Path, params: Params) -> bool:
    path = seed_dir / "settings.json"
    return path.exists() and json.loads(path.read_text()) == run_settings(params)


def copy_finished(source_seed_dir: Path, seed_dir: Path, name: str, params: Params, done_marker: str) -> bool:
    """Copy `source_seed_dir/name` to `seed_dir/name` if it is finished (has `done_marker`) and was made with
    the same settings. Returns whether it was copied. The copy is made beside the target and renamed."""
    source, target = source_seed_dir / name, seed_dir / name
    if not (source / done_marker).exists() or not same_settings(source_seed_dir, params):
        return False
    partial = seed_dir / f".{name}.copying"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, symlinks=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return True
