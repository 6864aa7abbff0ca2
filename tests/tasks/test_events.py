"""mgral.batch.labeled: emitted once when an import ends the wait for labels, never failing the import."""

import shutil

import pytest
from prefect.logging import disable_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from mgral_cli.main import app
from mgral_formats import load_dataset, load_unlabeled_folder
from mgral_workspace.cycle_steps import labeling_wait, wait_ended_by
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


def test_wait_ended_by_is_a_reason_before_and_none_after():
    assert wait_ended_by("batch 1: 1/4 labeled; waiting for annotations", None)
    assert not wait_ended_by("batch 1: 1/4 labeled; waiting", "batch 1: 1/4 labeled; waiting")  # still waiting
    assert not wait_ended_by(None, None)  # the wait had ended before: no second event
    assert not wait_ended_by(None, "batch 2: 0/4 labeled; waiting")


@pytest.fixture
def cold_start_batch(tmp_path):
    """A real-use project after a cold start: made from unlabeled photos only (val/test carved out of them),
    its batch 1 = 4 pool images + every val/test image; the annotators' answers beside it."""
    data = generate_dataset(SyntheticSpec(seed=2, image_size=32, n_pool=12, n_val=4, n_test=4), tmp_path / "data")
    photos, answers = tmp_path / "photos", tmp_path / "answers"
    photos.mkdir(), answers.mkdir()
    for image in (data / "images").rglob("*.png"):
        shutil.copy(image, photos)
    for label in (data / "labels").rglob("*.txt"):
        shutil.copy(label, answers)
    dataset, _ = load_unlabeled_folder(photos, load_dataset(data)[0].class_names)
    project = init_project(tmp_path / "project", dataset, simulate=False, initial_labeled=0, min_eval_images=2)
    write_params(project / "params.yaml", tracking__version_pool=False, annotation__min_labeled_fraction=0.5)
    pool = PoolState.load(project)
    batch, val, test = list(pool.unlabeled_pool_ids[:4]), list(pool.ids("val")), list(pool.ids("test"))
    pool.mark_selected(batch + val + test, 1).save(project)
    return project, answers, batch, val, test


@pytest.fixture
def announced(monkeypatch):
    """Calls of emit_batch_labeled from both import paths, as (batch, labeled, total, imported_by); nothing is sent."""
    import tasks.annotation_tasks
    import tasks.events

    calls = []

    def record(project_dir, batch, labeled, total, imported_by, logger, wait=False):
        calls.append((batch, labeled, total, imported_by))
        return True

    monkeypatch.setattr(tasks.events, "emit_batch_labeled", record)  # the CLI imports it when it announces
    monkeypatch.setattr(tasks.annotation_tasks, "emit_batch_labeled", record)  # the cycle's inbox import
    return calls


def _import(path, project, folder, fraction=0.5):
    """One import through `mgral import` ("cli") or through a cycle's inbox import ("inbox")."""
    if path == "cli":
        result = CliRunner().invoke(app, ["import", str(project), str(folder)])
        assert result.exit_code == 0, result.output
    else:
        (project / "inbox").mkdir(exist_ok=True)
        shutil.copytree(folder, project / "inbox" / folder.name)
        with disable_run_logger():
            assert import_inbox_task.fn(str(project), fraction)["errors"] == []


@pytest.mark.parametrize("path, by", [("cli", "import"), ("inbox", "cycle")])
def test_the_import_that_completes_the_batch_announces_it_once(open_batch, tmp_path, announced, path, by):
    project, answers, batch = open_batch
    for step, ids in enumerate([batch[:1], batch[1:2], batch[2:3]]):  # 1/4 below, 2/4 completes, 3/4 past
        _import(path, project, _labels(tmp_path, answers, ids, f"part{step}"))
        assert len(announced) == (0 if step == 0 else 1)
    assert announced == [(1, 2, 4, by)]
    assert labeling_wait(project, 0.5) is None


@pytest.mark.parametrize("path, by", [("cli", "import"), ("inbox", "cycle")])
def test_after_a_cold_start_the_import_that_brings_the_test_images_back_announces_it(cold_start_batch, tmp_path,
                                                                                      announced, path, by):
    project, answers, batch, val, test = cold_start_batch
    total = len(batch) + len(val) + len(test)
    _import(path, project, _labels(tmp_path, answers, batch + val, "pool_and_val"))  # past the fraction...
    assert len(batch + val) >= 0.5 * total
    assert "no labeled test image" in labeling_wait(project, 0.5)  # ...but no test image yet: still waiting
    assert announced == []
    _import(path, project, _labels(tmp_path, answers, test[:1], "test"))  # the wait ends here
    assert labeling_wait(project, 0.5) is None
    assert announced == [(1, len(batch + val) + 1, total, by)]
    _import(path, project, _labels(tmp_path, answers, test[1:], "rest"))  # after the wait: no second event
    assert len(announced) == 1


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
