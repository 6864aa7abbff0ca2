"""The benchmark resumes after SIGKILL without retraining finished cells, and on a Dask LocalCluster of two worker
processes gives the same table as on local threads; both against one uninterrupted local run. Stopped by SIGTERM,
it leaves no process behind: no temporary Prefect server, no Dask worker, no detector training."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from distributed import LocalCluster

from flows.benchmark import mgral_benchmark
from tests.conftest import write_params

pytestmark = pytest.mark.slow

STRATEGIES = ["random", "entropy_sum"]
TINY_PROFILE = {"strategies": STRATEGIES, "seeds": [0], "cycles": 1, "n_pool": 60, "image_size": 64, "epochs": 2,
                "finetune_epochs": 1, "budget": 8, "lookup_records": 3, "agent_iterations": 5,
                "finetune_repeats": 2}  # cycle 2 of each campaign: its own fine-tune and one with another seed


def _params_file(path: Path, **benchmark) -> Path:
    write_params(path)
    data = yaml.safe_load(path.read_text())
    data["benchmark"]["quick"].update(TINY_PROFILE)
    data["benchmark"].update(benchmark)
    path.write_text(yaml.safe_dump(data))
    return path


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv").sort_values(["strategy", "seed", "cycle"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prefect_harness) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("uninterrupted")
    mgral_benchmark(str(root / "out"), "quick", str(_params_file(root / "params.yaml")))
    table = _table(root / "out")
    assert len(table) == 2 * 1 * 2 and set(table["strategy"]) == set(STRATEGIES)
    fine_tunes = pd.read_csv(root / "out" / "finetunes.csv")
    assert sorted(fine_tunes["repeat"]) == [0, 0, 1, 1] and set(fine_tunes["cycle"]) == {2}
    means = fine_tunes.groupby("strategy")["map50_95"].mean()
    final = table[table["cycle"] == 2].set_index("strategy")["map50_95"]
    pd.testing.assert_series_equal(final.sort_index(), means.sort_index(), check_names=False)  # cell = mean
    assert "### Training noise" in (root / "out" / "auc.md").read_text()
    return table


def _mgral(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "mgral"), *args]


def test_kill_mid_benchmark_then_resume_retrains_nothing_finished(tmp_path, uninterrupted):
    params = _params_file(tmp_path / "params.yaml")
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    command = _mgral("benchmark", "--out", str(out), "--profile", "quick", "--params", str(params))
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    cells_dir = out / "runs" / "seed_0" / "random" / "cells"
    deadline = time.time() + 600
    while not ((cells_dir / "cycle_001.json").exists() and (cells_dir / "running.json").exists()):  # in cycle 2
        assert run.poll() is None, "the benchmark ended before it could be killed"
        assert time.time() < deadline, "no result cell appeared in time"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    cells = sorted(out.glob("runs/seed_0/*/cells/cycle_???.json"))
    assert 1 <= len(cells) < 4, cells  # killed mid-run: some cells done, some not
    finished = {p: p.stat().st_mtime_ns for p in cells}
    for cell in cells:  # the finished cycles' detector weights and selections
        cycle = cell.parents[1] / "cycles" / cell.stem
        finished.update({p: p.stat().st_mtime_ns for p in (cycle / "detector" / "best.pt", cycle / "selection.json")
                         if p.exists()})
    base_weights = out / "runs" / "seed_0" / "base" / "cycles" / "cycle_001" / "detector" / "best.pt"
    finished[base_weights] = base_weights.stat().st_mtime_ns
    untrained = sum(not (out / "runs" / "seed_0" / s / "cycles" / "cycle_002" / "detector" / "trained.json").exists()
                    for s in STRATEGIES)  # cycle 1 of every strategy is its seed's base detector, trained once
    unrepeated = sum(not (out / "runs" / "seed_0" / s / "cells" / "cycle_002_repeat_1.json").exists()
                     for s in STRATEGIES)

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = done.stdout + done.stderr
    assert f"{len(cells)}/4 cells already done (reused, not retrained)" in logs
    assert "interrupted cycles restart: random seed 0 cycle 2" in logs
    assert re.search(r"then the runs\s*: http://127\.0\.0\.1:5000/#/experiments/\d+/runs ", done.stdout), done.stdout[-2000:]
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was made again"
    assert logs.count("training detector on") == untrained + unrepeated  # only what never finished is trained
    pd.testing.assert_frame_equal(_table(out), uninterrupted)

    # a changed parameter is refused, naming it, and nothing is touched
    data = yaml.safe_load(params.read_text())
    data["benchmark"]["quick"]["finetune_epochs"] = 2
    params.write_text(yaml.safe_dump(data))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("cycle_*.json")}
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    shown = refused.stdout + refused.stderr
    assert "error:" in shown and "detector.finetune_epochs: 1 -> 2" in shown and "Traceback" not in shown
    assert {p: p.stat().st_mtime_ns for p in out.rglob("cycle_*.json")} == before


def test_dask_local_cluster_gives_the_local_table(tmp_path, uninterrupted):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        params = _params_file(tmp_path / "params.yaml", runner="dask", dask_address=cluster.scheduler_address)
        pids = _worker_pids(cluster)
        mgral_benchmark(str(tmp_path / "out"), "quick", str(params))
    pd.testing.assert_frame_equal(_table(tmp_path / "out"), uninterrupted)  # repeated fine-tunes' means included
    workers = {yaml.safe_load(p.read_text())["worker"].rsplit(" ", 1)[1]
               for p in (tmp_path / "out").glob("runs/seed_0/*/cells/cycle_*.json")}  # repeats included
    assert workers == {str(pid) for pid in pids}  # the two campaigns ran in the two worker processes


def _worker_pids(cluster: LocalCluster) -> set[int]:
    from distributed import Client

    with Client(cluster) as client:
        return set(client.run(os.getpid).values())


def _session_processes(sid: int) -> list[str]:
    """Command lines of the live processes of session `sid` (zombies, already ended, left out)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if os.getsid(process.info["pid"]) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(" ".join(process.info["cmdline"] or [])[:160])
        except (ProcessLookupError, PermissionError):
            continue
    return found


@pytest.mark.parametrize("runner", ["dask", "threads"])
def test_sigterm_ends_the_benchmark_at_once_and_leaves_no_process(tmp_path, runner):
    params = _params_file(tmp_path / "params.yaml", runner=runner, dask_workers=2)
    data = yaml.safe_load(params.read_text())
    data["benchmark"]["quick"]["epochs"] = 30  # the base training outlasts the test's wait by far
    params.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # its own temporary server
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    log = tmp_path / "log.txt"
    with log.open("w") as sink:
        run = subprocess.Popen(_mgral("benchmark", "--out", str(out), "--profile", "quick", "--params", str(params)),
                               env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = out / "runs" / "seed_0" / "base" / "cycles" / "cycle_001" / "detector"
    try:
        deadline = time.time() + 600
        while not list(base.glob(".child_*")):  # the base detector trains in a child process
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no detector training started in time"
            time.sleep(0.1)
        time.sleep(1)
        running = _session_processes(run.pid)
        assert sum("uvicorn" in c for c in running) == 1, running  # one temporary server: the workers share it
        assert any("mgral_backends.ultralytics.isolated" in c for c in running), running
        if runner == "dask":
            assert any("spawn_main" in c for c in running), running  # the Dask workers
        run.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` or a service manager does
        assert run.wait(300) == 143
        deadline = time.time() + 30
        while _session_processes(run.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert _session_processes(run.pid) == [], log.read_text()[-3000:]
        assert not (base / "trained.json").exists()  # the training was stopped, not waited for
        assert "Execution was aborted by a termination signal" in log.read_text()
    finally:
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getsid(process.info["pid"]) == run.pid:
                    process.kill()
            except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                continue
