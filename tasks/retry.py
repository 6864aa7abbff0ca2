"""Which task failures are worth a retry: transient ones, not deterministic ones."""

from __future__ import annotations

from mgral_backends.ultralytics.detector import TrainingDiverged

# Failures that a re-run on the same inputs would repeat exactly: retrying only wastes CPU time.
DETERMINISTIC = (TrainingDiverged, FloatingPointError, ValueError, KeyError, FileNotFoundError)


def transient_only(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry unless the run failed with a deterministic error."""
    return not isinstance(state.data, DETERMINISTIC)
