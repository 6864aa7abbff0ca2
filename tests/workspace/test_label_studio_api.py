"""The Label Studio client without Label Studio: token sources, addresses, error messages that never hold the token."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mgral_workspace.label_studio_api import LabelStudioClient, LabelStudioError, _relative_image_url, read_token

SECRET = "secret-token-that-must-not-leak-42"


class _Echo(BaseHTTPRequestHandler):
    """Answers /status/<code> with that code and a body that repeats the request's Authorization header."""

    def do_GET(self):
        code = int(self.path.split("/")[-1].split("?")[0])
        body = json.dumps({"detail": f"bad request with {self.headers.get('Authorization')}"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("code, expected", [
    (401, "refused the API token (HTTP 401 on GET /status/401); check LABEL_STUDIO_API_KEY"),
    (403, "refused the API token (HTTP 403"),
    (404, "project 7 not found (HTTP 404)"),
    (500, 'answered GET /status/500 with HTTP 500: bad request with Token ***'),
])
def test_server_errors_name_the_problem_and_never_the_token(echo_server, code, expected):
    client = LabelStudioClient(echo_server, SECRET)
    with pytest.raises(LabelStudioError) as err:
        client.request("GET", f"/status/{code}", what="project 7")
    assert expected in str(err.value) and SECRET not in str(err.value) and SECRET not in repr(client)


def test_a_closed_port_is_a_clear_message(echo_server):
    closed = echo_server.rsplit(":", 1)[0] + ":9"
    with pytest.raises(LabelStudioError, match=r"cannot reach Label Studio at http://127.0.0.1:9 \(.*refused"):
        LabelStudioClient(closed, SECRET).request("GET", "/api/projects")


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="no Label Studio API token: set LABEL_STUDIO_API_KEY"):
        read_token()
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", f" {SECRET}\n")
    assert read_token() == SECRET
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    assert read_token(token_file) == "from-the-file"
    token_file.write_text("\n")
    with pytest.raises(LabelStudioError, match="token file is empty"):
        read_token(token_file)
    with pytest.raises(LabelStudioError, match="cannot read the Label Studio token file"):
        read_token(tmp_path / "missing")


@pytest.mark.parametrize("url, message", [
    ("localhost:8080", "is not a Label Studio address"),
    ("ftp://host", "is not a Label Studio address"),
])
def test_addresses_are_checked(url, message):
    with pytest.raises(LabelStudioError, match=message):
        LabelStudioClient(url, SECRET)
    with pytest.raises(LabelStudioError, match="an empty one was given"):
        LabelStudioClient("http://127.0.0.1:8080", " ")
    assert LabelStudioClient("http://127.0.0.1:8080/api/", SECRET).url == "http://127.0.0.1:8080"


def test_image_urls_are_rebased_on_the_document_root():
    project = Path("/data/teams/p1")
    assert _relative_image_url("/data/local-files/?d=images/a%20b.png", project, project) == \
        "/data/local-files/?d=images/a%20b.png"
    assert _relative_image_url("/data/local-files/?d=images/a.png", project, Path("/data")) == \
        "/data/local-files/?d=teams/p1/images/a.png"
