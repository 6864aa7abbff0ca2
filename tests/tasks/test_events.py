"""mgral.batch.labeled: emitted once when an import completes the open batch, never failing the import."""

import shutil

import pytest
from prefect.logging import disable_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from mgral_cli.main import app
from mgral_formats import load_dataset
from mgral_workspace.cycle_steps import batch_completed_by
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset
from tasks.annotation_tasks import import_inbox_task
from tests.conftest import write_params


@pytest.fixture
def open_batch(tmp_path):
    """A real-use project whose cycle-1 batch of 4 is handed out; the annotators' answers beside it."""
    data = generate_dataset(SyntheticSpec(seed=2, image_size=32, n_pool=12, n_val=4, n_test=4), tmp_path / "data")
    answers = tmp_path / "answers"
    shutil.copytree(data / "labels" / "train", answers)
    for label in sorted((data / "labels" / "train").glob("*.txt"))[6:]:
        label.unlink()
    dataset, _ = load_dataset(data)
    project = init_project(tmp_path / "project", dataset, simulate=False, initial_labeled=0)
    write_params(project / "params.yaml", tracking__version_pool=False, annotation__min_labeled_fraction=0.5)
    batch = list(PoolState.load(project).unlabeled_pool_ids[:4])
    PoolState.load(project).mark_selected(batch, 1).save(project)
    return project, answers, batch


def _labels(tmp_path, answers, ids, name):
    folder = tmp_path / name
    folder.mkdir()
    for image_id in ids:
        shutil.copy(answers / f"{image_id}.txt", folder)
    return folder


def test_batch_completed_by_counts_each_batch_once():
    assert batch_completed_by((1, 1, 4), (1, 2, 4), 0.5)
    assert batch_completed_by((1, 0, 4), (1, 4, 4), 1.0)
    assert not batch_completed_by((1, 0, 4), (1, 1, 4), 0.5)  # still below
    assert not batch_completed_by((1, 2, 4), (1, 3, 4), 0.5)  # was already past: completed before
    assert not batch_completed_by((1, 1, 4), (2, 3, 4), 0.5)  # another batch
    assert not batch_completed_by((0, 0, 0), (0, 0, 0), 0.5)  # no batch open


@pytest.fixture
def recorded_events(monkeypatch):
    """Events handed to prefect.events.emit_event, as (event, resource, payload); nothing is sent."""
    import prefect.events

    sent = []
    monkeypatch.setattr(prefect.events, "emit_event",
                        lambda event, resource, payload=None: sent.append((event, resource, payload)) or object())
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield sent


def test_a_cycles_inbox_import_emits_the_event_once(open_batch, tmp_path, recorded_events):
    project, answers, batch = open_batch
    (project / "inbox").mkdir()
    with disable_run_logger():
        for step, ids in enumerate([batch[:1], batch[1:2], batch[2:3]]):  # 1/4 below, 2/4 completes, 3/4 past
            shutil.copytree(_labels(tmp_path, answers, ids, f"part{step}"), project / "inbox" / f"part{step}")
            import_inbox_task.fn(str(project), 0.5)
    assert len(recorded_events) == 1
    event, resource, payload = recorded_events[0]
    assert event == "mgral.batch.labeled" and payload == {"batch": 1, "labeled": 2, "batch_size": 4}
    assert resource == {"prefect.resource.id": f"mgral.project.{project.name}", "prefect.resource.name": project.name,
                        "mgral.project.dir": str(project.resolve()), "mgral.batch": "1",
                        "mgral.imported-by": "cycle"}


@pytest.mark.parametrize("url, message", [
    (None, "no Prefect server configured (PREFECT_API_URL is not set): event mgral.batch.labeled for batch 1 "
           "not emitted"),
    ("http://127.0.0.1:9/api", "Prefect server at http://127.0.0.1:9/api unreachable"),
])
def test_an_import_without_a_reachable_server_still_imports(open_batch, tmp_path, url, message):
    project, answers, batch = open_batch
    with temporary_settings(updates={PREFECT_API_URL: url}):
        result = CliRunner().invoke(app, ["import", str(project), str(_labels(tmp_path, answers, batch[:3], "l"))])
    assert result.exit_code == 0, result.output
    assert message in result.output and "imported labels for 3 images" in result.output
    assert PoolState.load(project).counts()["labeled"] == 6 + 3
