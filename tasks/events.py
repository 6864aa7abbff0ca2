"""The Prefect event MGRAL emits when an import ends the wait for labels: `mgral.batch.labeled`.

When to emit is `mgral_workspace.cycle_steps.wait_ended_by` (`labeling_wait` before and after the import).

A deployment trigger in prefect.yaml runs `mgral/cycle` for the project named in the event, so
labels landing start the next cycle. Emitting never fails an import: without a reachable Prefect
server the event is skipped and the reason logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

BATCH_LABELED = "mgral.batch.labeled"
IMPORTED_BY_CLI = "import"  # `mgral import`: nothing else runs on the project, the trigger starts a cycle
IMPORTED_BY_CYCLE = "cycle"  # a cycle's inbox import: that cycle goes on to train, the trigger ignores it
DRAIN_SECONDS = 15.0


def batch_labeled_resource(project_dir: str | Path, batch: int, imported_by: str) -> dict[str, str]:
    """The event's resource: `mgral.project.<name>`, labelled with the project directory and the batch."""
    project = Path(project_dir).resolve()
    return {"prefect.resource.id": f"mgral.project.{project.name}", "prefect.resource.name": project.name,
            "mgral.project.dir": str(project), "mgral.batch": str(batch), "mgral.imported-by": imported_by}


def emit_batch_labeled(project_dir: str | Path, batch: int, labeled: int, total: int, imported_by: str,
                       logger: logging.Logger | logging.LoggerAdapter, wait: bool = False) -> bool:
    """Emit `mgral.batch.labeled` for `batch` of the project; True if it was handed to a server.

    Args:
        imported_by: IMPORTED_BY_CLI or IMPORTED_BY_CYCLE (a resource label the trigger matches on).
        wait: send before returning (a short-lived process such as the CLI); inside a flow run
            Prefect sends queued events itself when the run ends.

    Does not raise: with no PREFECT_API_URL (Prefect would start a temporary server of its own),
    an unreachable server or an error while sending, it logs why and returns False.
    """
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        logger.info(f"no Prefect server configured (PREFECT_API_URL is not set): event {BATCH_LABELED} "
                    f"for batch {batch} not emitted")
        return False
    try:
        if wait:
            with get_client(sync_client=True) as client:
                unreachable = client.api_healthcheck()
            if unreachable is not None:
                logger.warning(f"Prefect server at {url} unreachable ({type(unreachable).__name__}): "
                               f"event {BATCH_LABELED} for batch {batch} not emitted")
                return False
        event = emit_event(BATCH_LABELED, resource=batch_labeled_resource(project_dir, batch, imported_by),
                           payload={"batch": batch, "labeled": labeled, "batch_size": total})
        if event is None:
            logger.warning(f"Prefect did not accept event {BATCH_LABELED} for batch {batch}")
            return False
        if wait:
            _, pending = EventsWorker.drain_all(timeout=DRAIN_SECONDS)
            if pending:
                logger.warning(f"event {BATCH_LABELED} for batch {batch} not confirmed sent to {url} "
                               f"within {DRAIN_SECONDS:.0f} s")
                return False
    except Exception as err:  # an event must never fail the import that already succeeded
        logger.warning(f"event {BATCH_LABELED} for batch {batch} not emitted: {type(err).__name__}: {err}")
        return False
    logger.info(f"event {BATCH_LABELED} emitted for batch {batch} ({labeled}/{total} labeled) to {url}")
    return True
