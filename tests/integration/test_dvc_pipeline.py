"""`dvc repro` runs the pipeline from params.yaml; a second `dvc repro` does nothing; `dvc exp run simulate -S ...`
runs the simulation as DVC experiments whose params and metrics `dvc exp show --json` lists."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, write_params

pytestmark = pytest.mark.slow

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"}  # `dvc exp run` commits each experiment


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """A git copy of the repository with tiny params, after one `dvc repro`: (work dir, env)."""
    work = tmp_path_factory.mktemp("dvc") / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files + ["dvc.yaml", ".dvcignore", ".dvc/config", "params.yaml"]:
        source = REPO / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    tiny_benchmark = {"strategies": ["random", "coreset"], "seeds": [0, 1], "cycles": 1, "budget": 8, "n_pool": 60,
                      "image_size": 64, "epochs": 2, "finetune_epochs": 1, "lookup_records": 3, "agent_iterations": 5}
    write_params(work / "params.yaml", campaign__cycles=1, selection__strategy="random", pretrain__images=10,
                 pretrain__val_images=2, pretrain__epochs=1, pretrain__batch=4,
                 benchmark__quick=tiny_benchmark)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", **GIT_IDENTITY}
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        _run(args, work, env)
    if not (work / ".dvc").exists():
        _run(["dvc", "init", "-q"], work, env)
    _run(["dvc", "repro"], work, env)
    return work, env


def test_dvc_repro_twice(repro, tmp_path):
    work, env = repro
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    assert metrics["final_labeled"] == 28 and metrics["strategy"] == "random"
    assert "map50_95" in (work / "reports" / "learning_curve.csv").read_text()
    second = _run(["dvc", "repro"], work, env)
    assert "didn't change, skipping" in second and "Running stage" not in second
    shown = _run(["dvc", "metrics", "show"], work, env)
    assert "final_map50_95" in shown
    assert len(pd.read_csv(work / "benchmark_results" / "quick" / "results.csv")) == 2 * 2 * 2
    plots = _run(["dvc", "plots", "show", "reports/learning_curve.csv", "-o", str(tmp_path / "plots")], work, env)
    assert (tmp_path / "plots" / "index.html").exists(), plots


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """{name: data} of the experiments on the baseline commit, from `dvc exp show --json` (DVC 3: a list of
    ExpState dicts, the workspace first, then each baseline with `experiments`: ExpRanges of `revs`)."""
    baseline = next(state for state in shown if state["rev"] != "workspace")
    return {rng["revs"][0]["name"]: rng["revs"][0]["data"] for rng in baseline["experiments"] or []}


def test_dvc_experiments_compare_strategies(repro, prefect_server):
    """Two `dvc exp run simulate -S ...` (the dataset stage is not re-run) and their row in `dvc exp show --json`."""
    work, env = repro
    env = {**env, "PREFECT_API_URL": prefect_server["PREFECT_API_URL"]}  # the session's server: no temporary one
    for name, strategy, budget in (("ebal-4", "ebal", 4), ("entropy-6", "entropy_sum", 6)):
        out = _run(["dvc", "exp", "run", "simulate", "-n", name, "-S", f"selection.strategy={strategy}",
                    "-S", f"selection.budget={budget}"], work, env)
        assert "Running stage 'simulate'" in out and "Running stage 'generate'" not in out
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], work, env))
    experiments = _experiments(shown)
    assert set(experiments) == {"ebal-4", "entropy-6"}
    for name, strategy, labeled in (("ebal-4", "ebal", 20 + 4), ("entropy-6", "entropy_sum", 20 + 6)):
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["selection"]["strategy"] == strategy
        assert data["params"]["params.yaml"]["data"]["selection"]["budget"] == labeled - 20
        metrics = data["metrics"]["reports/metrics.json"]["data"]  # committed with the experiment
        assert metrics["strategy"] == strategy and metrics["final_labeled"] == labeled
        assert 0.0 <= metrics["final_map50_95"] <= 1.0 and 0.0 <= metrics["final_map50"] <= 1.0
    table = _run(["dvc", "exp", "show", "--no-pager", "--only-changed", "--csv"], work, env)
    assert "ebal-4" in table and "entropy-6" in table and "final_labeled" in table

