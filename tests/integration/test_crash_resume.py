"""SIGKILL in the middle of the lookup table: the pool is intact and the re-run reuses finished work."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgral_workspace.pool import PoolState
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def test_kill_mid_lookup_table_then_resume(tiny_project, tmp_path):
    write_params(tiny_project / "params.yaml", selection__strategy="mgral", lookup_table__records=6,
                 tracking__version_pool=False)
    pool_before = (tiny_project / "pool.csv").read_bytes()
    labels_before = sorted(p.name for p in (tiny_project / "labels").iterdir())
    env = {**os.environ, "MGRAL_MAX_WORKERS": "1", "PREFECT_HOME": str(tmp_path / "prefect")}
    mgral = Path(sys.executable).parent / "mgral"
    run = subprocess.Popen([str(mgral), "cycle", str(tiny_project)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    table = tiny_project / "cycles" / "cycle_001" / "lookup_table"
    deadline = time.time() + 300
    while not (table / "record_001.json").exists():
        assert run.poll() is None, "the cycle ended before it could be killed"
        assert time.time() < deadline, "no lookup record appeared in time"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert (tiny_project / "pool.csv").read_bytes() == pool_before  # last committed pool state intact
    assert sorted(p.name for p in (tiny_project / "labels").iterdir()) == labels_before
    finished = {p.name: p.stat().st_mtime_ns for p in table.glob("record_*.json")}
    assert 2 <= len(finished) < 6
    weights = tiny_project / "cycles" / "cycle_001" / "detector" / "best.pt"
    weights_mtime = weights.stat().st_mtime_ns
    embeddings = tiny_project / "cycles" / "cycle_001" / "pool_inference.npz"
    embeddings_mtime = embeddings.stat().st_mtime_ns

    done = subprocess.run([str(mgral), "cycle", str(tiny_project)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert weights.stat().st_mtime_ns == weights_mtime  # detector training reused
    assert embeddings.stat().st_mtime_ns == embeddings_mtime  # pool detections + embeddings reused (once per cycle)
    for name, mtime in finished.items():  # finished records reused, not retrained
        assert (table / name).stat().st_mtime_ns == mtime
    assert len(list(table.glob("record_*.json"))) == 6
    pool = PoolState.load(tiny_project)
    assert pool.counts()["labeled"] == 20 + 8
    shutil.rmtree(tmp_path / "prefect", ignore_errors=True)
