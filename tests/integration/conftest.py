"""Servers shared by the integration tests: one real Prefect server per test session."""

import os
import signal
import subprocess

import pytest

from tests.integration.servers import BIN, free_port, healthy, wait_for


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A `prefect server start` on a free 127.0.0.1 port with its own PREFECT_HOME; yields the env to reach it."""
    port = free_port()
    home = tmp_path_factory.mktemp("prefect_home")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: healthy(env["PREFECT_API_URL"]), 180, "the Prefect server")
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
