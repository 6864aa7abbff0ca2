"""MLflow tracking for MGRAL: one experiment per project, a parent run per campaign, a run per cycle.

All calls go through an explicit `MlflowClient` and run id (never the thread-local active run),
so they are safe from Prefect's worker threads. This is the only package that imports mlflow.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from mgral_workspace.config import Params


def tracking_uri(project_dir: str | Path, params: Params) -> str:
    """MLFLOW_TRACKING_URI wins, then tracking.uri, then a sqlite store inside the project."""
    return (os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
            or f"sqlite:///{(Path(project_dir) / 'mlflow.db').resolve()}")


def experiment_name(project_dir: str | Path, params: Params) -> str:
    return params.tracking.experiment or f"mgral-{Path(project_dir).resolve().name}"


def client_for(project_dir: str | Path, params: Params) -> tuple[MlflowClient, str]:
    """A client and the project's experiment id (created on first use, artifacts in the project)."""
    client = MlflowClient(tracking_uri(project_dir, params))
    name = experiment_name(project_dir, params)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return client, experiment.experiment_id
    artifacts = (Path(project_dir) / "mlruns").resolve().as_uri()
    return client, client.create_experiment(name, artifact_location=artifacts)


def start_run(project_dir: str | Path, params: Params, name: str, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None) -> str:
    client, experiment_id = client_for(project_dir, params)
    all_tags = {MLFLOW_RUN_NAME: name, **(tags or {})}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    return client.create_run(experiment_id, tags=all_tags).info.run_id


def end_run(project_dir: str | Path, params: Params, run_id: str, status: str = "FINISHED") -> None:
    client_for(project_dir, params)[0].set_terminated(run_id, status)


def log_params(project_dir: str | Path, params: Params, run_id: str, values: Mapping[str, object]) -> None:
    client = client_for(project_dir, params)[0]
    for key, value in values.items():
        client.log_param(run_id, key, str(value)[:6000])


def flat_params(params: Params) -> dict[str, object]:
    """params as {"section.key": value} (nothing secret lives in params.yaml)."""
    flat = {}
    for section, values in params.model_dump().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    return flat


def log_metrics(project_dir: str | Path, params: Params, run_id: str, metrics: Mapping[str, float],
                step: int = 0) -> None:
    client = client_for(project_dir, params)[0]
    for key, value in metrics.items():
        if value == value:  # skip NaN (a class absent from the split has no AP)
            client.log_metric(run_id, _metric_key(key), float(value), step=step)


def _metric_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def log_artifact(project_dir: str | Path, params: Params, run_id: str, path: str | Path,
                 artifact_path: str | None = None) -> None:
    client_for(project_dir, params)[0].log_artifact(run_id, str(path), artifact_path)


def log_json(project_dir: str | Path, params: Params, run_id: str, obj: object, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(obj, indent=2))
        log_artifact(project_dir, params, run_id, path)


def set_tags(project_dir: str | Path, params: Params, run_id: str, tags: Mapping[str, str]) -> None:
    client = client_for(project_dir, params)[0]
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def log_series(project_dir: str | Path, params: Params, run_id: str, series: Mapping[str, Sequence[float]],
               max_points: int = 200) -> None:
    """Each series as one metric by step, thinned to about `max_points` evenly spaced steps."""
    client = client_for(project_dir, params)[0]
    for key, values in series.items():
        for i in range(0, len(values), max(1, len(values) // max_points)):
            client.log_metric(run_id, _metric_key(key), float(values[i]), step=i)
