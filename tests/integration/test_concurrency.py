"""Two processes on one project: the second is refused with a message naming the first, or waits its turn."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mgral_workspace.pool import PoolState
from mgral_workspace.project_lock import ProjectLockedError, project_lock
from tests.conftest import write_params
from tests.integration.test_real_project import make_real_project

pytestmark = pytest.mark.slow
HOLD = """
import sys, time
from mgral_workspace.project_lock import project_lock
with project_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_writer_is_refused_while_first_holds(tmp_path):
    project = make_real_project(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project), "900"],  # killed below; outlives slow
                              stdout=subprocess.PIPE, text=True)                # refusals on loaded cores
    try:
        assert holder.stdout.readline().strip() == "locked"
        mgral = Path(sys.executable).parent / "mgral"
        for args in (["cycle", str(project)], ["import", str(project), str(tmp_path / "data" / "labels" / "train")]):
            done = subprocess.run([str(mgral), *args], capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, done.stdout + done.stderr
            assert f"pid {holder.pid}" in done.stderr and "test holder" in done.stderr
            assert "Traceback" not in done.stderr
        pool_before = (project / "pool.csv").read_bytes()
        assert (project / "pool.csv").read_bytes() == pool_before
    finally:
        holder.kill()
        holder.wait()
    with project_lock(project, "after the holder died"):  # the kernel released the dead holder's lock
        with project_lock(project, "re-entrant in one process"):
            pass


def test_waiting_writer_gets_the_lock_when_released(tmp_path):
    project = make_real_project(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project), "2"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ProjectLockedError, match="test holder"):
        with project_lock(project, "impatient"):
            pass
    start = time.time()
    with project_lock(project, "patient", wait_seconds=30):
        assert time.time() - start < 30
    holder.wait()


def _waits_for(pid: int, lock: Path) -> bool:
    """True once process `pid` has the lock file open: it is inside project_lock, waiting for its turn."""
    try:
        return any(os.readlink(fd) == str(lock) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone, or a descriptor closed while we looked
        return False


def test_two_concurrent_imports_make_two_commits_each_with_its_own_labels(tmp_path):
    """Both imports wait for a third holder, then run back to back: each must merge and commit under the lock.

    Before, the git/DVC commit ran after the lock was released: the second import merged while the first
    was still committing, and one commit named after the first held both label sets.
    """
    import dvc.api

    from tasks.versioning import ensure_versioned

    project = make_real_project(tmp_path)
    write_params(project / "params.yaml", selection__strategy="entropy_sum", tracking__version_pool=True)
    ensure_versioned(project)
    batch = list(PoolState.load(project).unlabeled_pool_ids[:4])
    PoolState.load(project).mark_selected(batch, 1).save(project)
    folders = {"first": batch[:2], "second": batch[2:]}
    for name, ids in folders.items():
        (tmp_path / name).mkdir()
        for image_id in ids:
            (tmp_path / name / f"{image_id}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project), "60"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    mgral, env = Path(sys.executable).parent / "mgral", {**os.environ, "MGRAL_LOCK_WAIT": "180"}
    imports = [subprocess.Popen([str(mgral), "import", str(project), str(tmp_path / name)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in folders]
    try:
        deadline = time.time() + 120
        while not all(_waits_for(p.pid, (project / ".mgral.lock").resolve()) for p in imports):
            assert time.time() < deadline and all(p.poll() is None for p in imports), "imports never waited"
            time.sleep(0.2)
    finally:
        holder.kill()  # both wait: the lock passes from one import straight to the other
        holder.wait()
    outputs = [p.communicate(timeout=300)[0] for p in imports]
    for process, output in zip(imports, outputs):
        assert process.returncode == 0 and "imported labels for 2 images" in output, output
    log = subprocess.run(["git", "log", "--reverse", "--format=%H %s"], cwd=project, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    commits = [line.split(" ", 1) for line in log if " from " in line]
    assert len(commits) == 2, log
    sources = [subject.rsplit(" from ", 1)[1] for _, subject in commits]
    assert sorted(sources) == ["first", "second"]
    expected = set()
    for (commit, _), source in zip(commits, sources):
        expected |= set(folders[source])
        pool = pd.read_csv(io.StringIO(dvc.api.read("pool.csv", repo=str(project), rev=commit)), dtype=str)
        labeled = set(pool.loc[(pool["labeled"] == "True") & pool["image_id"].isin(batch), "image_id"])
        assert labeled == expected, f"commit of {source} holds labels of {sorted(labeled)}"
