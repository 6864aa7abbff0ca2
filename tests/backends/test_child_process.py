"""A child process (isolated training, proxy record) returns its handler's result, and ends with its parent:
a parent killed mid-training no longer leaves its child training on into the folder a resumed run reuses."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from mgral_backends.ultralytics.child import run_child

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.backends.sleeping_child"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_the_child_returns_its_result(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result, done = run_child(MODULE, {"pid_file": str(tmp_path / "pid"), "seconds": 0}, tmp_path)
    assert done.returncode == 0 and result == {"slept": 0}
    assert int((tmp_path / "pid").read_text()) != os.getpid()
    assert not list(tmp_path.glob(".child_*"))  # its request/result folder is removed


def test_a_child_ends_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    parent_code = textwrap.dedent(f"""
        from pathlib import Path
        from mgral_backends.ultralytics.child import run_child
        run_child({MODULE!r}, {{"pid_file": {str(pid_file)!r}, "seconds": 600}}, Path({str(tmp_path)!r}))
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT)
    try:
        assert wait_until(pid_file.exists, 60), "the child never started"
        child = int(pid_file.read_text())
        assert not gone(child)
        parent.send_signal(signal.SIGKILL)  # no chance to clean up: a session that ends, an OOM kill
        parent.wait(10)
        assert wait_until(lambda: gone(child), 15), f"child {child} still running after its parent was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid_file.exists() and not gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_stop_children_ends_a_running_child_and_its_call_returns_without_a_result(tmp_path, monkeypatch):
    import threading

    from mgral_backends.ultralytics.child import stop_children

    monkeypatch.chdir(ROOT)
    pid_file, outcome = tmp_path / "pid", {}

    def call():
        outcome["result"], outcome["done"] = run_child(MODULE, {"pid_file": str(pid_file), "seconds": 600}, tmp_path)

    caller = threading.Thread(target=call)  # a campaign on a local thread, as the threads runner runs it
    caller.start()
    assert wait_until(pid_file.exists, 60), "the child never started"
    assert stop_children() == 1
    caller.join(30)
    assert not caller.is_alive(), "run_child still waits for a stopped child"
    assert outcome["result"] is None and outcome["done"].returncode == -signal.SIGTERM
    assert gone(int(pid_file.read_text())) and stop_children() == 0


def test_a_child_whose_parent_is_already_gone_stops_and_removes_its_folder(tmp_path):
    work = tmp_path / ".child_test"
    work.mkdir()
    (work / "request.json").write_text('{"pid_file": "%s", "seconds": 600}' % (tmp_path / "pid"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists: the parent died before the child got going
    child = subprocess.run([sys.executable, "-m", MODULE, str(work / "request.json"), str(work / "result.json"),
                            str(dead.pid)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 75 and "is gone; stopping" in child.stderr
    assert not work.exists()  # nobody else would remove it
