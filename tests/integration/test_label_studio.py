"""A real Label Studio server: import our tasks with pre-annotations, annotate, export, `mgral import`."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from flows.cycle import mgral_cycle
from mgral_workspace.annotation_import import import_annotations
from mgral_workspace.pool import PoolState
from tests.conftest import REPO
from tests.integration.test_real_project import make_real_project

pytestmark = pytest.mark.slow
TOKEN = "mgral-test-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                     headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    executable = subprocess.run(["bash", str(REPO / "scripts" / "label_studio_env.sh")], capture_output=True,
                                text=True, check=True, timeout=900).stdout.strip().splitlines()[-1]
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("label_studio")
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_USERNAME": "mgral@example.com",
           "LABEL_STUDIO_PASSWORD": "mgral-test-password", "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    server = subprocess.Popen([executable, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "Label Studio did not start in 180 s"
            time.sleep(2)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_round_trip_through_label_studio(label_studio, tmp_path, prefect_harness):
    project = make_real_project(tmp_path)
    result = mgral_cycle(str(project), budget=6)
    export = project / "exports" / "cycle_001"
    ls_project = _api(label_studio, "POST", "/api/projects",
                      {"title": "mgral cycle 1", "label_config": (export / "label_studio_config.xml").read_text()})
    tasks = json.loads((export / "label_studio_tasks.json").read_text())
    _api(label_studio, "POST", f"/api/projects/{ls_project['id']}/import", tasks)
    listed = _api(label_studio, "GET", f"/api/tasks?project={ls_project['id']}&page_size=100&fields=all")
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    assert len(listed) == 6
    assert sum(t.get("total_predictions", 0) for t in listed) == sum(1 for t in tasks if t["predictions"])
    annotated = []
    for task in listed[:4]:  # the annotator draws one triangle per image in 4 of the 6 images
        _api(label_studio, "POST", f"/api/tasks/{task['id']}/annotations", {"result": [{
            "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 64,
            "original_height": 64, "value": {"x": 10, "y": 20, "width": 25, "height": 30, "rotation": 0,
                                             "rectanglelabels": ["triangle"]}}]})
        annotated.append(task["data"]["mgral_id"])
    exported = _api(label_studio, "GET", f"/api/projects/{ls_project['id']}/export?exportType=JSON")
    export_file = tmp_path / "label_studio_export.json"
    export_file.write_text(json.dumps(exported))

    summary = import_annotations(project, export_file)
    assert sorted(summary.imported) == sorted(annotated)
    pool = PoolState.load(project)
    assert set(pool.pending_ids()) == set(result["selected"]) - set(annotated)
    label = (project / "labels" / f"{annotated[0]}.txt").read_text().split()
    assert label[0] == "2" and float(label[1]) == pytest.approx((10 + 12.5) / 100, abs=1e-4)
