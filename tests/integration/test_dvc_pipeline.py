"""`dvc repro` runs the pipeline from params.yaml; a second `dvc repro` does nothing."""

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


def _run(args, cwd, env):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_dvc_repro_twice(tmp_path):
    work = tmp_path / "repo"
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
           "PYTHONDONTWRITEBYTECODE": "1"}
    for args in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        _run(args, work, env)
    if not (work / ".dvc").exists():
        _run(["dvc", "init", "-q"], work, env)
    _run(["dvc", "repro"], work, env)
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
