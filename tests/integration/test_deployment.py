"""The `mgral/cycle` deployment against a real Prefect server on 127.0.0.1, triggered by the prefect CLI."""

import os
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.integration.servers import BIN, wait_for
from tests.integration.test_real_project import make_real_project

pytestmark = pytest.mark.slow


def test_deployment_run_exports_a_batch(prefect_server, tmp_path):
    env = prefect_server
    project = make_real_project(tmp_path)
    serve_log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([str(BIN / "mgral"), "serve", str(project)], env=env, stdout=serve_log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def deployed():
            out = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env, capture_output=True, text=True)
            return "mgral/cycle" in out.stdout
        wait_for(deployed, 120, "deployment mgral/cycle")
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "mgral/cycle", "--param", "budget=5",
                              "--watch", "--watch-timeout", "600"], env=env, capture_output=True, text=True,
                             timeout=660)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:] + (tmp_path / "serve.log").read_text()[-3000:]
        assert "Completed" in run.stdout + run.stderr
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
        serve_log.close()
    export = project / "exports" / "cycle_001"
    assert (export / "label_studio_tasks.json").exists() and len((export / "images.txt").read_text().split()) == 5
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"mgral-{project.name}")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "test_map50_95" in runs[0].data.metrics
