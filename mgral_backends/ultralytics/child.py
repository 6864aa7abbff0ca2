"""Run one call in a fresh Python process: a JSON request in, a JSON result out (isolated trainings, records).

The parent writes the request to a temporary folder, runs `python -m <module> request.json result.json`
and reads the result back; the child's module calls `child_main` with a handler that turns the request
into the result. A child has none of the parent's threads (so nothing else draws from the RNGs
Ultralytics seeds) and returns its memory when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
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
        done = subprocess.run([sys.executable, "-m", module, str(request_file), str(result_file)],
                              stdin=subprocess.DEVNULL, timeout=timeout, env=None if env is None else dict(env),
                              capture_output=capture, text=True)
        result = json.loads(result_file.read_text()) if result_file.exists() else None
    return result, done


def child_main(handler: Callable[[dict], dict], argv: list[str] | None = None) -> None:
    """The child's side: read the request named by argv[1], write handler(request) to argv[2]."""
    request_file, result_file = (sys.argv if argv is None else argv)[1:3]
    result = handler(json.loads(Path(request_file).read_text()))
    Path(result_file).write_text(json.dumps(result))
