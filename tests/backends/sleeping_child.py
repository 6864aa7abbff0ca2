"""A child for tests/backends/test_child_process.py: writes its pid, then sleeps for `seconds`."""

import os
import time
from pathlib import Path

from mgral_backends.ultralytics.child import child_main


def _sleep(request: dict) -> dict:
    Path(request["pid_file"]).write_text(str(os.getpid()))
    time.sleep(request["seconds"])
    return {"slept": request["seconds"]}


if __name__ == "__main__":
    child_main(_sleep)
