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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def run_child(module: str, request: dict, work_parent: Path, *, timeout: float | None = None,
              env: Mapping[str, str] | None = None,
              capture: bool = False) -> tuple[dict | None, subprocess.CompletedProcess]:
    """(the child's result, or None when it wrote none; the finished process). Request and result live in a
    temporary folder under `work_parent`, removed afterwards. `capture` keeps the child's output in the
    returned process instead of passing it through."""
    Path(work_parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".child_", dir=work_parent) as work:
        request_file, result_file = Path(work) / "request.json", Path(work) / "result.json"
        request_file.write_text(json.dumps(request))
        done = subprocess.run([sys.executable, "-m", module, str(request_file), str(result_file), str(os.getpid())],
                              stdin=subprocess.DEVNULL, timeout=timeout, env=None if env is None else dict(env),
                              capture_output=capture, text=True)
        result = json.loads(result_file.read_text()) if result_file.exists() else None
    return result, done


PARENT_GONE_EXIT = 75  # the child's exit status when it stopped because its parent had gone


def exit_with_parent(parent_pid: int, interval: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process (exit status PARENT_GONE_EXIT) once its parent is no
    longer `parent_pid`: an orphan is re-parented (to init or a subreaper), so its parent id changes."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        print(f"mgral child {os.getpid()}: parent {parent_pid} is gone; stopping", file=sys.stderr, flush=True)
        os._exit(PARENT_GONE_EXIT)

    thread = threading.Thread(target=watch, name="mgral-exit-with-parent", daemon=True)
    thread.start()
    return thread


def child_main(handler: Callable[[dict], dict], argv: list[str] | None = None) -> None:
    """The child's side: read the request named by argv[1], write handler(request) to argv[2]; with a parent
    pid in argv[3] (as `run_child` passes), end when that parent does (`exit_with_parent`)."""
    argv = sys.argv if argv is None else argv
    request_file, result_file = argv[1:3]
    if len(argv) > 3:
        exit_with_parent(int(argv[3]))
    result = handler(json.loads(Path(request_file).read_text()))
    Path(result_file).write_text(json.dumps(result))
