"""Run one call in a fresh Python process: a JSON request in, a JSON result out (isolated trainings, records).

The parent writes the request to a temporary folder, runs `python -m <module> request.json result.json`
and reads the result back; the child's module calls `child_main` with a handler that turns the request
into the result. A child has none of the parent's threads (so nothing else draws from the RNGs
Ultralytics seeds) and returns its memory when it ends.

A child ends with its parent: killed mid-training (a benchmark stopped, a session ended), the parent
used to leave its children training on, burning the cores and writing into the run folder that the
resumed run trains in again. The child's one extra thread checks every second that its parent is still
there (it draws from no RNG) and ends the process when it is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path


_LIVE: set[subprocess.Popen] = set()  # this process's running children, for stop_children
_LIVE_LOCK = threading.Lock()


def run_child(module: str, request: dict, work_parent: Path, *, timeout: float | None = None,
              env: Mapping[str, str] | None = None,
              capture: bool = False) -> tuple[dict | None, subprocess.CompletedProcess]:
    """(the child's result, or None when it wrote none; the finished process). Request and result live in a
    temporary folder under `work_parent`, removed afterwards. `capture` keeps the child's output in the
    returned process instead of passing it through. A child still running after `timeout` seconds is killed
    (subprocess.TimeoutExpired); `stop_children` stops it from another thread."""
    Path(work_parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".child_", dir=work_parent) as work:
        request_file, result_file = Path(work) / "request.json", Path(work) / "result.json"
        request_file.write_text(json.dumps(request))
        args = [sys.executable, "-m", module, str(request_file), str(result_file), str(os.getpid())]
        pipe = subprocess.PIPE if capture else None
        with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True,
                              env=None if env is None else dict(env)) as process:
            with _LIVE_LOCK:
                _LIVE.add(process)
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except BaseException:  # a timeout, Ctrl-C, SIGTERM's SystemExit: the child goes with it (as subprocess.run)
                process.kill()
                raise
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(process)
        done = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        result = json.loads(result_file.read_text()) if result_file.exists() else None
    return result, done


def stop_children() -> int:
    """Terminate every child `run_child` is waiting for (the caller is stopping: SIGTERM); how many there were.
    Their `run_child` calls then return without a result, so the trainings fail instead of running on."""
    with _LIVE_LOCK:
        live = [process for process in _LIVE if process.poll() is None]
    for process in live:
        process.terminate()
    return len(live)


PARENT_GONE_EXIT = 75  # the child's exit status when it stopped because its parent had gone


def exit_with_parent(parent_pid: int, interval: float = 1.0, work_dir: Path | None = None) -> threading.Thread:
    """Start a daemon thread that ends this process (exit status PARENT_GONE_EXIT) once its parent is gone: an
    orphan is re-parented (to init or a subreaper), so its parent id changes. `work_dir`, the request's folder,
    is removed on the way out (the dead parent can no longer remove it).

    When this process's parent is not `parent_pid` from the start while `parent_pid` lives (a launcher that
    forks in between, such as a venv redirector), the parent it started with is watched instead.
    """
    def stop() -> None:
        print(f"mgral child {os.getpid()}: parent {parent_pid} is gone; stopping", file=sys.stderr, flush=True)
        if work_dir is not None and Path(work_dir).name.startswith(".child_"):
            shutil.rmtree(work_dir, ignore_errors=True)
        os._exit(PARENT_GONE_EXIT)

    watched = os.getppid()
    if watched != parent_pid and not _alive(parent_pid):
        stop()  # the parent died before this process got here

    def watch() -> None:
        while os.getppid() == watched:
            time.sleep(interval)
        stop()

    thread = threading.Thread(target=watch, name="mgral-exit-with-parent", daemon=True)
    thread.start()
    return thread


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def child_main(handler: Callable[[dict], dict], argv: list[str] | None = None) -> None:
    """The child's side: read the request named by argv[1], write handler(request) to argv[2]; with a parent
    pid in argv[3] (as `run_child` passes), end when that parent does (`exit_with_parent`)."""
    argv = sys.argv if argv is None else argv
    request_file, result_file = argv[1:3]
    if len(argv) > 3:
        exit_with_parent(int(argv[3]), work_dir=Path(request_file).parent)
    result = handler(json.loads(Path(request_file).read_text()))
    Path(result_file).write_text(json.dumps(result))
