"""Stop the detector's child processes when a flow is interrupted while it waits for tasks on local threads.

SIGTERM inside a flow run raises Prefect's TerminationSignal in the main thread (Ctrl-C a KeyboardInterrupt), but
the thread task runner then waits for the tasks already running before the flow can end: a campaign's detector
training, a lookup record, minutes each. Stopping their child processes first (`stop_children`) makes those tasks
fail at once, so the process ends in seconds and the interrupted cycle restarts on the next run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mgral_backends.ultralytics.child import stop_children


@contextmanager
def children_stop_when_interrupted() -> Iterator[None]:
    """Around the wait for mapped tasks: on an interrupt (a BaseException that is not an Exception: Prefect's
    TerminationSignal, KeyboardInterrupt, SystemExit) stop this process's training children, then re-raise. An
    ordinary task failure stops nothing: the other tasks go on."""
    try:
        yield
    except BaseException as interrupt:
        if not isinstance(interrupt, Exception):
            stop_children()
        raise
