"""prefect.yaml for real: `prefect deploy --all`, a process worker, and an import whose event starts the next cycle."""

import json
import os
import shutil
import signal
import subprocess

import pytest

from mgral_formats import load_dataset
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset
from tests.conftest import REPO, write_params
from tests.integration.servers import BIN, prefect_api, wait_for

pytestmark = pytest.mark.slow


def _project_with_open_batch(tmp_path, batch: int = 6):
    """A real-use project whose cycle-1 batch is handed out, and the labels its annotators will draw."""
    data = generate_dataset(SyntheticSpec(seed=1, image_size=64, n_pool=40, n_val=12, n_test=12), tmp_path / "data")
    answers = tmp_path / "answers"
    shutil.copytree(data / "labels" / "train", answers)
    for label in sorted((data / "labels" / "train").glob("*.txt"))[16:]:
        label.unlink()
    dataset, _ = load_dataset(data)
    project = init_project(tmp_path / "project", dataset, simulate=False, initial_labeled=0)
    write_params(project / "params.yaml", selection__strategy="random", selection__budget=5,
                 tracking__version_pool=False, annotation__min_labeled_fraction=0.5)
    pool = PoolState.load(project)
    handed_out = pool.unlabeled_pool_ids[:batch]
    pool.mark_selected(handed_out, 1).save(project)  # what cycle 1's export step records
    return project, answers, list(handed_out)


def _run(args, env, **kwargs):
    done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _cycle_runs(api: str) -> list[dict]:
    return prefect_api(api, "POST", "/flow_runs/filter",
                       {"deployments": {"name": {"any_": ["cycle"]}}, "sort": "EXPECTED_START_TIME_DESC"})


def test_an_import_that_completes_the_batch_starts_the_next_cycle(prefect_server, tmp_path):
    env = {**prefect_server, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PREFECT_WORKER_QUERY_SECONDS": "2", "MGRAL_MAX_WORKERS": "2"}
    api = env["PREFECT_API_URL"]
    project, answers, handed_out = _project_with_open_batch(tmp_path)

    _run([BIN / "prefect", "work-pool", "create", "mgral", "--type", "process", "--overwrite"], env)
    deployed = _run([BIN / "prefect", "deploy", "--all"], env, cwd=REPO)
    assert "mgral/cycle" in deployed
    deployment = prefect_api(api, "GET", "/deployments/name/mgral/cycle")
    assert deployment["work_pool_name"] == "mgral"
    schema = deployment["parameter_openapi_schema"]["properties"]
    assert "coreset" in schema["strategy"]["anyOf"][0]["enum"] and schema["budget"]["anyOf"][0]["minimum"] == 1
    automations = prefect_api(api, "POST", "/automations/filter", {})
    trigger = next(a["trigger"] for a in automations if deployment["id"] in str(a["actions"]))
    assert trigger["expect"] == ["mgral.batch.labeled"] and trigger["match"]["mgral.imported-by"] == "import"

    earlier = {r["id"] for r in _cycle_runs(api)}  # runs of mgral/cycle by other tests of the session
    worker_log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "mgral"], env=env, cwd=tmp_path,
                              stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        below = tmp_path / "first_two"  # 2 of 6 is below min_labeled_fraction 0.5: no event yet
        below.mkdir()
        for image_id in handed_out[:2]:
            shutil.copy(answers / f"{image_id}.txt", below)
        out = _run([BIN / "mgral", "import", project, below], env)
        assert "mgral.batch.labeled" not in out
        resource = {"prefect.resource.id": f"mgral.project.{project.name}", "mgral.project.dir": str(project),
                    "mgral.batch": "1", "mgral.imported-by": "cycle"}  # a cycle's own inbox import: no second cycle
        _run([BIN / "prefect", "event", "emit", "mgral.batch.labeled", "--resource", json.dumps(resource)], env)
        rest = tmp_path / "next_two"  # 4 of 6 reaches it: the event, then the trigger's flow run
        rest.mkdir()
        for image_id in handed_out[2:4]:
            shutil.copy(answers / f"{image_id}.txt", rest)
        out = _run([BIN / "mgral", "import", project, rest], env)
        assert "event mgral.batch.labeled emitted for batch 1 (4/6 labeled)" in out, out

        def finished():
            runs = [r for r in _cycle_runs(api) if r["id"] not in earlier]
            done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            return done[0] if done else None

        try:
            run = wait_for(finished, 420, "the triggered mgral/cycle run", interval=3)
        except TimeoutError:
            raise AssertionError((tmp_path / "worker.log").read_text()[-4000:]) from None
        assert run["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        assert run["parameters"]["project_dir"] == str(project.resolve())
        assert len([r for r in _cycle_runs(api) if r["id"] not in earlier]) == 1  # one event, one cycle

        # the cron option, as documented: the same deployment with a daily schedule, its trigger kept
        _run([BIN / "prefect", "deploy", "--name", "cycle", "--cron", "0 6 * * *", "--param",
              f"project_dir={project}"], env, cwd=REPO)
        scheduled = prefect_api(api, "GET", "/deployments/name/mgral/cycle")
        assert [s["schedule"]["cron"] for s in scheduled["schedules"]] == ["0 6 * * *"]
        assert scheduled["parameters"] == {"project_dir": str(project)}
        assert any(scheduled["id"] in str(a["actions"]) for a in prefect_api(api, "POST", "/automations/filter", {}))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        worker_log.close()
        prefect_api(api, "DELETE", f"/deployments/{deployment['id']}")

    export = project / "exports" / "cycle_002"
    assert len((export / "images.txt").read_text().split()) == 5
    pool = PoolState.load(project)
    assert pool.counts()["labeled"] == 16 + 4
    new_batch = set(pool.table.loc[pool.table["selected_cycle"] == 2, "image_id"])
    assert len(new_batch) == 5 and not new_batch & set(handed_out)
    assert set(pool.pending_ids()) == set(handed_out[4:]) | new_batch
