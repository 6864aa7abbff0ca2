"""MLflow tracking for MGRAL: one experiment per project, a parent run per campaign, a run per cycle, and the
project's detector in the Model Registry (a version per cycle, aliases `champion` and `latest-cycle`).

All calls go through an explicit `MlflowClient` and run id (never the thread-local active run),
so they are safe from Prefect's worker threads. This is the only package that imports mlflow.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from mgral_backends.protocol import SERVING_COLUMNS, ServingModel
from mgral_workspace.config import Params


def tracking_uri(project_dir: str | Path, params: Params) -> str:
    """MLFLOW_TRACKING_URI wins, then tracking.uri, then a sqlite store inside the project."""
    return (os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
            or f"sqlite:///{(Path(project_dir) / 'mlflow.db').resolve()}")


def experiment_name(project_dir: str | Path, params: Params) -> str:
    return params.tracking.experiment or f"mgral-{Path(project_dir).resolve().name}"


# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces, evaluations) and hides
# the runs behind a "Model training" switch; with it, the experiment opens on its runs table.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui --host 127.0.0.1 --port 5000` serves


def client_for(project_dir: str | Path, params: Params) -> tuple[MlflowClient, str]:
    """A client and the project's experiment id (created on first use, artifacts in the project, marked as a
    model-training experiment; one made before that mark gets it on its next use)."""
    client = MlflowClient(tracking_uri(project_dir, params))
    name = experiment_name(project_dir, params)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return client, experiment.experiment_id
    artifacts = (Path(project_dir) / "mlruns").resolve().as_uri()
    return client, client.create_experiment(name, artifact_location=artifacts,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def runs_page(project_dir: str | Path, params: Params, run_id: str | None = None) -> str:
    """The MLflow UI address of the project's runs table (or of one run), for people to open: the tracking
    server itself when the store is one, else `mlflow ui`'s default address. The table groups and compares
    runs by their `strategy` tag."""
    uri = tracking_uri(project_dir, params)
    ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    experiment_id = client_for(project_dir, params)[1]
    return f"{ui}/#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")


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


CHAMPION, LATEST_CYCLE = "champion", "latest-cycle"
TEST_MAP_TAG = "test_map50_95"  # a registered version's test mAP50-95: what `champion` is decided on
DETECTOR_ARTIFACT = "registered_detector"


def registered_model_name(project_dir: str | Path, params: Params) -> str:
    """tracking.registered_model, else `mgral-<project dir name>-detector` with '/', ':' (MLflow refuses them)
    and quotes (they would end a search filter) replaced by '_'."""
    name = params.tracking.registered_model or f"mgral-{Path(project_dir).resolve().name}-detector"
    return "".join("_" if c in "/:'\"" else c for c in name)


def register_detector(project_dir: str | Path, params: Params, run_id: str, serving: ServingModel,
                      test_map50_95: float, cycle: int, weights_sha256: str) -> dict[str, object]:
    """Log `serving` to `run_id` as an MLflow pyfunc model and register it as a version of the project's model.

    The version is tagged with its test mAP50-95, cycle and weights digest. `latest-cycle` always moves to
    it; `champion` moves only when its test mAP50-95 is higher than the current champion's (or there is
    none). A version with the same weights digest (a re-run of a cycle that was registered already) is
    reused, not registered twice. Returns name, version, the aliases it holds and the champion's version.
    """
    client = client_for(project_dir, params)[0]
    name = registered_model_name(project_dir, params)
    _ensure_registered_model(client, name)
    version = _version_with_weights(client, name, weights_sha256)
    if version is None:
        source = _log_pyfunc(client, run_id, serving)
        version = client.create_model_version(
            name, source, run_id=run_id, description=f"cycle {cycle} detector of {Path(project_dir).resolve()}",
            tags={TEST_MAP_TAG: repr(float(test_map50_95)), "mgral.cycle": str(cycle),
                  "mgral.weights_sha256": weights_sha256}).version
    client.set_registered_model_alias(name, LATEST_CYCLE, version)
    champion = _champion(client, name)
    if champion is None or _test_map(champion) < float(test_map50_95):  # a NaN never beats a champion
        client.set_registered_model_alias(name, CHAMPION, version)
        champion_version = version
    else:
        champion_version = champion.version
    aliases = [LATEST_CYCLE] + ([CHAMPION] if str(champion_version) == str(version) else [])
    return {"name": name, "version": int(version), "aliases": aliases, "champion": int(champion_version),
            "uri": f"models:/{name}/{version}"}


def _log_pyfunc(client: MlflowClient, run_id: str, serving: ServingModel) -> str:
    """Save `serving` as a pyfunc model (loader-module flavor) and log it under the run; its artifact URI."""
    import mlflow.pyfunc
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        outputs=Schema([ColSpec(kind, column) for column, kind in SERVING_COLUMNS]),
        params=ParamSchema([ParamSpec(key, "double", value) for key, value in serving.params.items()])
        if serving.params else None)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # an input example would be an image path that does not exist where the model is loaded
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        path = Path(tmp) / DETECTOR_ARTIFACT
        mlflow.pyfunc.save_model(str(path), loader_module=serving.loader_module, data_path=str(serving.data_path),
                                 code_paths=[str(p) for p in serving.code_paths] or None,
                                 pip_requirements=list(serving.requirements), signature=signature)
        client.log_artifacts(run_id, str(path), DETECTOR_ARTIFACT)
    return f"{client.get_run(run_id).info.artifact_uri}/{DETECTOR_ARTIFACT}"


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        client.create_registered_model(name, description="MGRAL's detector, one version per cycle; aliases "
                                       f"'{CHAMPION}' (best test mAP50-95) and '{LATEST_CYCLE}'")


def _version_with_weights(client: MlflowClient, name: str, weights_sha256: str) -> str | None:
    for found in client.search_model_versions(f"name = '{name}'"):
        if found.tags.get("mgral.weights_sha256") == weights_sha256:
            return found.version
    return None


def _champion(client: MlflowClient, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        return None


def _test_map(version) -> float:
    value = float(version.tags.get(TEST_MAP_TAG, "nan"))
    return value if value == value else float("-inf")
