"""One writer per project: an exclusive lock file naming its holder.

Cycles, campaigns and imports take the lock for their whole duration; a second one either waits
(up to `wait_seconds`) or is refused with a message naming the holder (pid, what, since when).
The lock is re-entrant within a process (a campaign's cycles run under the campaign's lock) and
is released by the kernel if the holder dies, so a killed run never leaves the project locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".mgral.lock"
_held: dict[str, int] = {}
_guard = threading.Lock()


class ProjectLockedError(RuntimeError):
    """Another process is working on the project."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('purpose')}, since "
            f"{time.strftime('%H:%M:%S', time.localtime(info.get('since', 0)))})")


@contextmanager
def project_lock(project_dir: str | Path, purpose: str, wait_seconds: float = 0.0) -> Iterator[None]:
    path = Path(project_dir).resolve() / LOCK_FILE
    key = str(path)
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for every file
    deadline = time.time() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() >= deadline:
                    raise ProjectLockedError(
                        f"{Path(project_dir)} is busy: {_holder(path)} holds it; try again when it has finished"
                    ) from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                                  "since": time.time()}).encode(), 0)
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
