"""Version a project's pool with DVC: the project directory is a small git + DVC repository.

`images/` and `oracle/` are added once; `pool.csv` and `labels/` after every cycle and import,
each time as one git commit, so `git log` lists the pool's versions, `dvc diff HEAD~1` shows what
a cycle changed, and `git checkout <rev> && dvc checkout` recovers any earlier pool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger, task

from mgral_workspace.config import Params

# Never versioned: per-cycle work, tracking stores, the writer lock (its content changes with every
# holder, so versioning it would make `git checkout <earlier commit>` refuse to run) and the pool's
# summary for `mgral status` (derived from pool.csv, and ignored whenever it does not match it).
IGNORED = ["/cycles/", "/exports/", "/inbox/", "/reports/", "/mlruns/", "/mlflow.db", "/quarantine/", "/params.yaml.*",
           "/.mgral.lock", "/.pool_summary.json"]


class VersioningError(RuntimeError):
    """git or dvc failed; the message carries their output."""


def _dvc() -> str:
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "mgral", "GIT_AUTHOR_EMAIL": "mgral@localhost",
           "GIT_COMMITTER_NAME": "mgral", "GIT_COMMITTER_EMAIL": "mgral@localhost"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise VersioningError(f"{' '.join(args)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    return done.stdout


def ensure_versioned(project_dir: str | Path) -> bool:
    """Make the project a git + DVC repo with images/ and oracle/ tracked; False if it already was."""
    project = Path(project_dir).resolve()
    if (project / ".dvc").exists():
        return False
    if not (project / ".git").exists():
        _run(["git", "init", "-q"], project)
    _run([_dvc(), "init", "-q"], project)
    _run([_dvc(), "config", "core.analytics", "false"], project)
    (project / ".gitignore").write_text("\n".join(IGNORED) + "\n")
    targets = [t for t in ("images", "oracle") if (project / t).exists()]
    if targets:
        _run([_dvc(), "add", "-q", *targets], project)
    commit_pool(project, "mgral: project created")
    return True


def commit_pool(project_dir: str | Path, message: str) -> str:
    """dvc add pool.csv and labels/, then one git commit; returns the commit id."""
    project = Path(project_dir).resolve()
    _run([_dvc(), "add", "-q", "pool.csv", "labels"], project)
    _run(["git", "add", "-A"], project)
    if _run(["git", "status", "--porcelain"], project).strip():
        _run(["git", "commit", "-q", "-m", message], project)
    return _run(["git", "rev-parse", "HEAD"], project).strip()


@task(name="version-pool")
def version_pool_task(project_dir: str, params: Params, message: str) -> str | None:
    if not params.tracking.version_pool:
        return None
    ensure_versioned(project_dir)
    commit = commit_pool(project_dir, f"mgral: {message}")
    get_run_logger().info(f"pool versioned with DVC: commit {commit[:8]} ({message})")
    return commit
