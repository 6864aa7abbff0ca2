"""Label Studio through its REST API: hand a batch to a Label Studio project and fetch what was annotated.

`push_batch` creates (or reuses, by title) a project with the batch's labeling config, connects a
*Local files* storage on the project's images (so nothing is uploaded or downloaded) and imports
the batch's tasks with their pre-annotations; tasks already in the project are not imported twice.
`pull_export` saves the project's JSON export to a file, which `mgral import` then validates and
merges like any other export (`annotation_import.import_annotations`). The API token is sent only
in the Authorization header and never appears in a message, a log line or an exception.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgral_workspace.cycle_steps import open_batch_progress

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
STORAGE_TITLE = "mgral project images"
PAGE_SIZE = 100


class LabelStudioError(RuntimeError):
    """Label Studio could not be reached or refused a request; the message names what and never the token."""


def read_token(token_file: Path | None = None) -> str:
    """The API token: the first line of `token_file` if given, else the LABEL_STUDIO_API_KEY environment variable."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise LabelStudioError(f"{token_file}: cannot read the Label Studio token file ({type(err).__name__})") \
                from None
        if not token:
            raise LabelStudioError(f"{token_file}: the Label Studio token file is empty")
        return token.splitlines()[0].strip()
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise LabelStudioError(f"no Label Studio API token: set {TOKEN_ENV} (Account & Settings > "
                               "Access Token in Label Studio) or name a file holding it with --ls-token-file")
    return token


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2 and all(token.split("."))


@dataclass
class LabelStudioClient:
    """A minimal JSON client of one Label Studio server.

    A legacy token is sent as `Token <key>`; a personal access token (a JWT) is first exchanged at
    /api/token/refresh/ for an access token sent as `Bearer <access>`, as Label Studio's SDK does.
    """

    url: str
    token: str = field(repr=False)
    timeout: float = 60.0
    _authorization: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.token.strip():
            raise LabelStudioError(f"no Label Studio API token (an empty one was given); set {TOKEN_ENV} or name a "
                                   "file holding it with --ls-token-file")
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise LabelStudioError(f"{self.url!r} is not a Label Studio address (expected http://HOST:PORT)")
        self.url = self.url.rstrip("/")
        if self.url.endswith("/api"):
            self.url = self.url[:-4]

    def _scrub(self, text: str) -> str:
        for secret in (self.token, self._authorization):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _auth_header(self) -> str:
        if self._authorization is None:
            if _is_jwt(self.token):
                access = self._send("POST", "/api/token/refresh/", {"refresh": self.token}, authorization=None)
                if not isinstance(access, dict) or not access.get("access"):
                    raise LabelStudioError(f"Label Studio at {self.url} did not exchange the personal access token "
                                           "for an access token")
                self._authorization = f"Bearer {access['access']}"
            else:
                self._authorization = f"Token {self.token}"
        return self._authorization

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None, what: str = "") -> Any:
        """Send one request; the decoded JSON answer (None when empty). `what` names the object in a 404 message."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self._send(method, path, body, authorization=self._auth_header(), what=what)

    def _send(self, method: str, path: str, body: Any, authorization: str | None, what: str = "") -> Any:
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        raw = self._open(urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers),
                         f"{method} {path.split('?')[0]}", what)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LabelStudioError(f"Label Studio at {self.url} answered {method} {path.split('?')[0]} with "
                                   "something that is not JSON; is this address a Label Studio server?") from None

    def _open(self, request: urllib.request.Request, endpoint: str, what: str = "") -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(err, endpoint, what) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise LabelStudioError(self._scrub(f"cannot reach Label Studio at {self.url} ({reason}); is it running, "
                                               "and is the address right?")) from None

    def serves(self, path: str) -> int:
        """The HTTP status of GET `path` (its first byte only): 200 or 206 when Label Studio serves the file."""
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": self._auth_header(),
                                                                      "Range": "bytes=0-0"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url} ({getattr(err, 'reason', err)})") \
                from None

    def _http_error(self, err: urllib.error.HTTPError, endpoint: str, what: str) -> LabelStudioError:
        try:
            detail = err.read().decode("utf-8", "replace")
        except OSError:
            detail = ""
        try:
            parsed = json.loads(detail)
        except json.JSONDecodeError:
            detail = " ".join(detail.split())
        else:
            if isinstance(parsed, dict):  # Label Studio: {"detail": "Validation error", "validation_errors": {...}}
                parsed = parsed.get("validation_errors") or parsed.get("detail") or parsed
            detail = parsed if isinstance(parsed, str) else json.dumps(parsed)
        detail = detail[:600]
        if err.code in (401, 403):
            message = (f"Label Studio at {self.url} refused the API token (HTTP {err.code} on {endpoint}); check "
                       f"{TOKEN_ENV} or the --ls-token-file")
        elif err.code == 404:
            message = f"Label Studio at {self.url}: {what or endpoint} not found (HTTP 404)"
        else:
            message = f"Label Studio at {self.url} answered {endpoint} with HTTP {err.code}: {detail}"
        return LabelStudioError(self._scrub(message))

    def paged(self, path: str, query: dict, key: str) -> list[dict]:
        """Every item of a paginated list (`results` or `key` in each page, or a plain list)."""
        items, page = [], 1
        while True:
            answer = self.request("GET", path, query={**query, "page": page, "page_size": PAGE_SIZE})
            if isinstance(answer, list):
                return items + answer
            batch = answer.get(key, answer.get("results", [])) if isinstance(answer, dict) else []
            items += batch
            total = answer.get("total", answer.get("count")) if isinstance(answer, dict) else None
            if not batch or len(batch) < PAGE_SIZE or (total is not None and len(items) >= total):
                return items
            page += 1


@dataclass
class PushSummary:
    project_id: int
    project_url: str
    created_project: bool
    storage_id: int
    imported: int
    already_there: int
    cycle: int


def _batch_export(project: Path, cycle: int | None) -> tuple[int, Path]:
    if cycle is None:
        cycle, _, total = open_batch_progress(project)
        if not total:
            raise LabelStudioError(f"{project}: no batch has been selected yet; run `mgral cycle` first")
    export = project / "exports" / f"cycle_{cycle:03d}"
    if not (export / "label_studio_tasks.json").is_file():
        raise LabelStudioError(f"{export / 'label_studio_tasks.json'}: no exported batch for cycle {cycle}")
    return cycle, export


def _relative_image_url(image_url: str, project: Path, document_root: Path) -> str:
    """Re-base `/data/local-files/?d=<path in the project>` on the server's LOCAL_FILES_DOCUMENT_ROOT."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(image_url).query)
    if "d" not in query:
        return image_url
    path = (project / query["d"][0]).relative_to(document_root)
    return f"/data/local-files/?d={urllib.parse.quote(path.as_posix())}"


def _check_served(client: LabelStudioClient, image_url: str, root: Path) -> None:
    """Refuse to import tasks whose images Label Studio would not show (a wrong document root, serving off)."""
    status = client.serves(image_url)
    if status not in (200, 206):
        raise LabelStudioError(
            f"Label Studio at {client.url} does not serve the batch's images (HTTP {status} for {image_url}); start it "
            f"with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}, or "
            "pass the document root it has with --ls-document-root; no task was imported")


def _same_config(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def find_or_create_project(client: LabelStudioClient, title: str, label_config: str) -> tuple[dict, bool]:
    """The project titled exactly `title` (created with `label_config` if there is none); (project, created)."""
    same = [p for p in client.paged("/api/projects", {"title": title}, "results") if p.get("title") == title]
    if len(same) > 1:
        raise LabelStudioError(f"Label Studio at {client.url} has {len(same)} projects titled {title!r} "
                               f"(ids {', '.join(str(p['id']) for p in same)}); rename all but one, or pass "
                               "another --ls-title")
    if same:
        found = client.request("GET", f"/api/projects/{same[0]['id']}", what=f"project {same[0]['id']}")
        if not _same_config(found.get("label_config", ""), label_config):
            raise LabelStudioError(f"Label Studio project {found['id']} ({title!r}) has another labeling config than "
                                   "this batch's label_studio_config.xml (other classes?); pass another --ls-title")
        return found, False
    created = client.request("POST", "/api/projects", {
        "title": title, "label_config": label_config,
        "description": "Batches selected by MGRAL; import finished labels with mgral import --from-label-studio"})
    return created, True


def connect_local_storage(client: LabelStudioClient, project_id: int, images_dir: Path) -> int:
    """The id of the project's Local files storage on `images_dir`, connected if missing (never synced)."""
    existing = client.request("GET", "/api/storages/localfiles", query={"project": project_id})
    for storage in existing or []:
        if Path(str(storage.get("path", ""))) == images_dir:
            return int(storage["id"])
    created = client.request("POST", "/api/storages/localfiles", {
        "project": project_id, "path": str(images_dir), "title": STORAGE_TITLE, "use_blob_urls": False,
        "regex_filter": "", "recursive_scan": False})
    return int(created["id"])


def _wait_for_import(client: LabelStudioClient, project_id: int, import_id: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while True:
        state = client.request("GET", f"/api/projects/{project_id}/imports/{import_id}", what=f"import {import_id}")
        status = str(state.get("status", "")).lower() if isinstance(state, dict) else ""
        if status == "completed":
            return
        if status == "failed":
            raise LabelStudioError(f"Label Studio import {import_id} into project {project_id} failed: "
                                   f"{str(state.get('error', ''))[:600]}")
        if time.time() > deadline:
            raise LabelStudioError(f"Label Studio import {import_id} into project {project_id} not finished "
                                   f"after {timeout:.0f} s")
        time.sleep(1)


def push_batch(project_dir: str | Path, client: LabelStudioClient, title: str | None = None,
               cycle: int | None = None, document_root: str | Path | None = None) -> PushSummary:
    """Hand the open batch (or `cycle`'s) to Label Studio: project, Local files storage, pre-annotated tasks.

    Args:
        title: the Label Studio project (default `mgral <project folder name>`), reused when it exists.
        document_root: the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: this project's
            folder); the images folder must lie below it, and task image URLs are made relative to it.

    Does not change the MGRAL project. Tasks whose `mgral_id` is already in the Label Studio
    project are not imported again, so a second push of the same batch adds nothing.
    """
    project = Path(project_dir).resolve()
    root = Path(document_root).resolve() if document_root else project
    images = project / "images"
    if root != project and root not in project.parents:
        raise LabelStudioError(f"the project {project} is not inside the document root {root}; Label Studio serves "
                               "local files only below LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    cycle, export = _batch_export(project, cycle)
    tasks = json.loads((export / "label_studio_tasks.json").read_text())
    config = (export / "label_studio_config.xml").read_text()
    ls_project, created = find_or_create_project(client, title or f"mgral {project.name}", config)
    project_id = int(ls_project["id"])
    storage_id = connect_local_storage(client, project_id, images)
    present = {str(t.get("data", {}).get("mgral_id")) for t in
               client.paged("/api/tasks", {"project": project_id, "fields": "all"}, "tasks")}
    new = []
    for task in tasks:
        if task["data"]["mgral_id"] in present:
            continue
        task = {**task, "data": {**task["data"], "image": _relative_image_url(task["data"]["image"], project, root)}}
        new.append(task)
    if new:
        _check_served(client, new[0]["data"]["image"], root)
        answer = client.request("POST", f"/api/projects/{project_id}/import", new, what=f"project {project_id}")
        if isinstance(answer, dict) and "import" in answer and "task_count" not in answer:  # asynchronous editions
            _wait_for_import(client, project_id, int(answer["import"]))
    return PushSummary(project_id, f"{client.url}/projects/{project_id}/data", created, storage_id, len(new),
                       len(tasks) - len(new), cycle)


def pull_export(client: LabelStudioClient, ls_project: int, out_dir: str | Path) -> Path:
    """Save Label Studio project `ls_project`'s JSON export (annotated tasks) to out_dir; the file's path.

    Every annotation of every annotated task is in it; which one counts (the latest completed,
    never a cancelled one) is decided by the import, as for an export file.
    """
    client.request("GET", f"/api/projects/{ls_project}", what=f"project {ls_project}")
    tasks = client.request("GET", f"/api/projects/{ls_project}/export", query={"exportType": "JSON"},
                           what=f"project {ls_project}")
    if not isinstance(tasks, list):
        raise LabelStudioError(f"Label Studio project {ls_project}: the JSON export is not a list of tasks")
    path = Path(out_dir) / f"label-studio-project-{ls_project}.json"
    path.write_text(json.dumps(tasks))
    return path
