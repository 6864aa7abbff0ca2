"""A real Label Studio server: import our tasks with pre-annotations, annotate, export, `mgral import`."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

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
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
           # local files below the session's temporary folder, where every test's project lives
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path_factory.getbasetemp())}
    log_path = data_dir / "label_studio.log"
    log = log_path.open("wb")
    server = subprocess.Popen([executable, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])

    try:
        deadline = time.time() + 300  # a loaded 2-core machine needs minutes
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"Label Studio exited with {server.returncode}:\n{log_tail()}"
            assert time.time() < deadline, f"Label Studio did not start in 300 s:\n{log_tail()}"
            time.sleep(2)
        yield base
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the whole group: Label Studio starts helpers
        except ProcessLookupError:
            pass
        server.wait(timeout=60)
        log.close()


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


@pytest.fixture
def fake_detector(monkeypatch):
    """Cycles here hand out batches; which boxes the detector draws is not under test."""
    from mgral_workspace import cycle_steps
    from tests.backends.fake_detector import FakeDetectorBackend

    fake = FakeDetectorBackend(imgsz=64)
    monkeypatch.setattr(cycle_steps, "get_backend", lambda detector: fake)
    return fake


def _box(label: str, x: float = 10, **extra) -> dict:
    return {"result": [{"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 64,
                        "original_height": 64, "value": {"x": x, "y": 20, "width": 25, "height": 30, "rotation": 0,
                                                         "rectanglelabels": [label]}}], **extra}


def _fetch(base: str, path: str) -> bytes:
    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def test_export_and_import_through_the_api(label_studio, tmp_path, tmp_path_factory, prefect_harness, fake_detector,
                                           monkeypatch, caplog, capfd):
    from typer.testing import CliRunner

    from mgral_cli.main import app

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    project = make_real_project(tmp_path)
    selected = mgral_cycle(str(project), budget=6)["selected"]  # a real cycle (fake detector) with its MLflow run
    root = str(tmp_path_factory.getbasetemp())
    runner = CliRunner()
    outputs, errors = [], []

    def mgral(*args, code=0):
        result = runner.invoke(app, [str(a) for a in args])
        outputs.append(result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            errors.append(f"{type(result.exception).__name__}: {result.exception}")
        assert result.exit_code == code, result.output
        return " ".join(result.output.split())  # as one line: the console wraps at its width

    out = mgral("export", project, "--to-label-studio", label_studio, "--ls-document-root", root)
    assert f"6 tasks of batch 1 imported with pre-annotations" in out and "(created)" in out
    ls_id = next(p["id"] for p in _api(label_studio, "GET", "/api/projects?page_size=100")["results"]
                 if p["title"] == f"mgral {project.name}")
    ls_project = _api(label_studio, "GET", f"/api/projects/{ls_id}")
    assert ls_project["label_config"].strip() == \
        (project / "exports" / "cycle_001" / "label_studio_config.xml").read_text().strip()
    storages = _api(label_studio, "GET", f"/api/storages/localfiles?project={ls_id}")
    assert [s["path"] for s in storages] == [str(project / "images")]
    tasks = _api(label_studio, "GET", f"/api/tasks?project={ls_id}&page_size=100&fields=all")["tasks"]
    assert sorted(t["data"]["mgral_id"] for t in tasks) == sorted(selected)
    exported = {t["data"]["mgral_id"]: t for t in
                json.loads((project / "exports" / "cycle_001" / "label_studio_tasks.json").read_text())}
    assert sum(t["total_predictions"] for t in tasks) == sum(1 for t in exported.values() if t["predictions"])
    image = tasks[0]["data"]["image"]  # served by Label Studio from the project's images folder, not uploaded
    assert _fetch(label_studio, image) == (project / "images" / Path(image.split("d=")[1]).name).read_bytes()

    personal = _api(label_studio, "POST", "/api/token/")["token"]  # a personal access token (a JWT) works too
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", personal)
    out = mgral("export", project, "--to-label-studio", label_studio, "--ls-document-root", root)
    assert "(reused): 0 tasks of batch 1 imported with pre-annotations, 6 already there" in out
    assert len(_api(label_studio, "GET", f"/api/tasks?project={ls_id}&page_size=100")["tasks"]) == 6

    by_id = {t["data"]["mgral_id"]: t["id"] for t in tasks}
    cancelled, twice, once, draft = selected[:4]
    _api(label_studio, "POST", f"/api/tasks/{by_id[cancelled]}/annotations", _box("circle", was_cancelled=True))
    _api(label_studio, "POST", f"/api/tasks/{by_id[twice]}/annotations", _box("circle"))
    _api(label_studio, "POST", f"/api/tasks/{by_id[twice]}/annotations", _box("triangle", x=40))  # the latest wins
    _api(label_studio, "POST", f"/api/tasks/{by_id[once]}/annotations", _box("square"))
    _api(label_studio, "POST", f"/api/tasks/{by_id[draft]}/drafts", _box("star"))  # a draft is not completed

    token_file = tmp_path / "ls-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    out = mgral("import", project, "--from-label-studio", label_studio, "--ls-project", ls_id,
                "--ls-token-file", token_file)
    assert "imported labels for 2 images" in out
    pool = PoolState.load(project)
    assert set(pool.pending_ids()) == set(selected) - {twice, once}
    label = (project / "labels" / f"{twice}.txt").read_text().split()
    assert label[0] == "2" and float(label[1]) == pytest.approx((40 + 12.5) / 100, abs=1e-4)  # triangle at x=40
    assert (project / "labels" / f"{once}.txt").read_text().split()[0] == "1"  # square
    out = mgral("import", project, "--from-label-studio", label_studio, "--ls-project", ls_id,
                "--ls-token-file", token_file)
    assert "imported labels for 0 images; 2 already imported, unchanged" in out

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong-" + TOKEN)
    out = mgral("import", project, "--from-label-studio", label_studio, "--ls-project", ls_id, code=2)
    assert "error: Label Studio at" in out and "refused the API token (HTTP 401" in out
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    out = mgral("import", project, "--from-label-studio", label_studio, "--ls-project", 99999, code=2)
    assert "error: Label Studio at" in out and "project 99999 not found (HTTP 404)" in out
    closed = f"http://127.0.0.1:{_free_port()}"
    out = mgral("export", project, "--to-label-studio", closed, code=2)
    assert f"error: cannot reach Label Studio at {closed}" in out
    out = mgral("export", project, "--to-label-studio", label_studio, "--ls-title", "no document root", code=2)
    assert "does not serve the batch's images (HTTP 404" in out and "--ls-document-root" in out
    other = next(p["id"] for p in _api(label_studio, "GET", "/api/projects?page_size=100")["results"]
                 if p["title"] == "no document root")
    assert _api(label_studio, "GET", f"/api/tasks?project={other}&page_size=100")["tasks"] == []
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    out = mgral("import", project, "--from-label-studio", label_studio, "--ls-project", ls_id, code=2)
    assert "error: no Label Studio API token: set LABEL_STUDIO_API_KEY" in out

    captured = capfd.readouterr()
    seen = "\n".join(outputs + errors + [caplog.text, captured.out, captured.err])
    assert TOKEN not in seen and personal not in seen and personal.split(".")[2] not in seen
    leaks = [str(p) for p in project.rglob("*") if p.is_file() and any(
        secret.encode() in p.read_bytes() for secret in (TOKEN, personal))]
    assert leaks == [] and (project / "mlflow.db").stat().st_size > 0  # the MLflow store included
