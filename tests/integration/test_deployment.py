"""The `mgral/cycle` deployment against a real Prefect server on 127.0.0.1, triggered by the prefect CLI."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.integration.test_real_project import make_real_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect_home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(lambda: _healthy(env["PREFECT_API_URL"]), 180, "the Prefect server")
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


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
        _wait(deployed, 120, "deployment mgral/cycle")
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
