"""The project's MLflow experiment opens on its runs table in MLflow 3's UI, and the printed address goes there."""

from mlflow.tracking import MlflowClient

from mgral_workspace.config import load_params
from tasks import tracking
from tasks.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, client_for, experiment_name, runs_page, start_run


def test_a_new_experiment_is_a_model_training_experiment_and_the_address_is_its_runs_table(tiny_project):
    params = load_params(tiny_project / "params.yaml")
    run_id = start_run(tiny_project, params, "cycle 1", {"strategy": "random", "cycle": "1"})
    client, experiment_id = client_for(tiny_project, params)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert runs_page(tiny_project, params) == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    assert runs_page(tiny_project, params, run_id) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}")
    assert client.get_run(run_id).data.tags["strategy"] == "random"  # what the runs table groups by


def test_an_experiment_made_before_the_mark_gets_it_on_its_next_use(tiny_project):
    params = load_params(tiny_project / "params.yaml")
    store = MlflowClient(f"sqlite:///{tiny_project / 'mlflow.db'}")
    old = store.create_experiment(experiment_name(tiny_project, params))  # as earlier versions made it
    assert EXPERIMENT_KIND_TAG not in store.get_experiment(old).tags
    assert client_for(tiny_project, params)[1] == old
    assert store.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_with_a_tracking_server_the_address_is_the_server(tiny_project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5123/")
    monkeypatch.setattr(tracking, "client_for", lambda project_dir, params: (None, "7"))
    params = load_params(tiny_project / "params.yaml")
    assert runs_page(tiny_project, params, "abc") == "http://127.0.0.1:5123/#/experiments/7/runs/abc"
