"""Two processes on one project: the second is refused with a message naming the first."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgral_workspace.project_lock import ProjectLockedError, project_lock
from tests.integration.test_real_project import make_real_project

pytestmark = pytest.mark.slow
HOLD = """
import sys, time
from mgral_workspace.project_lock import project_lock
with project_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_writer_is_refused_while_first_holds(tmp_path):
    project = make_real_project(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project)], stdout=subprocess.PIPE, text=True)
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
    holder = subprocess.Popen([sys.executable, "-c", HOLD.replace("60", "2"), str(project)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ProjectLockedError, match="test holder"):
        with project_lock(project, "impatient"):
            pass
    start = time.time()
    with project_lock(project, "patient", wait_seconds=30):
        assert time.time() - start < 30
    holder.wait()
