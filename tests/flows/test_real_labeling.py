"""Real labeling: a cycle exports the batch, waits for annotations, imports them atomically."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from flows.campaign import mgral_campaign
from flows.cycle import mgral_cycle
from mgral_workspace.annotation_import import AnnotationImportError, import_annotations, import_inbox
from mgral_formats import load_dataset
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project
from mgral_workspace.synthetic import SyntheticSpec, generate_dataset
from tests.conftest import write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def real_project(tmp_path):
    data = generate_dataset(SyntheticSpec(seed=1, image_size=64, n_pool=40, n_val=12, n_test=12), tmp_path / "data")
    answers = tmp_path / "answers"  # what the annotators will "draw": the generator's truth
    shutil.copytree(data / "labels" / "train", answers)
    for label in sorted((data / "labels" / "train").glob("*.txt"))[16:]:
        label.unlink()  # 16 labeled pool images, 24 unlabeled
    dataset, _ = load_dataset(data)
    project = init_project(tmp_path / "project", dataset, simulate=False, initial_labeled=0)
    write_params(project / "params.yaml", selection__budget=6, selection__strategy="entropy_sum",
                 annotation__min_labeled_fraction=0.5)
    return project, answers


def test_export_wait_import_cycle(real_project, tmp_path, prefect_harness):
    project, answers = real_project
    first = mgral_cycle(str(project))
    assert first["status"] == "exported" and len(first["selected"]) == 6
    export = project / "exports" / "cycle_001"
    tasks = json.loads((export / "label_studio_tasks.json").read_text())
    assert {t["data"]["mgral_id"] for t in tasks} == set(first["selected"])
    assert all(t["predictions"][0]["model_version"].startswith("mgral-cycle1") for t in tasks)
    assert "<RectangleLabels" in (export / "label_studio_config.xml").read_text()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(export / "coco_images.json"))
        predictions = json.loads((export / "coco_predictions.json").read_text())
        if predictions:
            coco.loadRes(predictions)
    assert len(coco.getImgIds()) == 6
    assert len((export / "images.txt").read_text().split()) == 6
    assert len(list((export / "yolo_prelabels").glob("*.txt"))) == 6
    assert (export / "contact_sheet.png").stat().st_size > 1000
    assert set(PoolState.load(project).pending_ids()) == set(first["selected"])

    waiting = mgral_cycle(str(project))  # nothing labeled yet: report and stop, no new selection
    assert waiting["status"] == "waiting" and "batch 1: 0/6 labeled" in waiting["message"]

    # annotators finish 4 of 6 (as a YOLO folder dropped in the inbox); a cycle imports them
    done = tmp_path / "done_yolo"
    done.mkdir()
    for image_id in first["selected"][:4]:
        shutil.copy(answers / f"{image_id}.txt", done / f"{image_id}.txt")
    shutil.copytree(done, project / "inbox" / "batch1")
    second = mgral_cycle(str(project))
    assert second["status"] == "exported" and second["cycle"] == 2
    pool = PoolState.load(project)
    assert pool.counts()["labeled"] == 16 + 4 and len(pool.pending_ids()) == 2 + 6
    assert (project / "inbox" / "done" / "batch1").is_dir()
    log = subprocess.run(["git", "log", "--oneline"], cwd=project, capture_output=True, text=True).stdout
    assert "cycle 2: entropy_sum selected 6" in log and "project created" in log

    # the README's recovery recipe: the pool of cycle 1, then back to the latest
    def run(*args):
        return subprocess.run(list(args), cwd=project, capture_output=True, text=True, check=True).stdout

    dvc = str(Path(sys.executable).parent / "dvc")
    run("git", "checkout", "-q", "HEAD~1")  # the pool as cycle 1 left it (the first cycle's commit creates the repo)
    run(dvc, "checkout", "-q")
    assert set(PoolState.load(project).pending_ids()) == set(first["selected"])
    run("git", "checkout", "-q", "-")
    run(dvc, "checkout", "-q")
    assert PoolState.load(project).counts()["labeled"] == 16 + 4

    with pytest.raises(ValueError, match="campaign runs simulated cycles"):
        mgral_campaign(str(project))


def test_import_validates_everything_first(real_project, prefect_harness):
    project, answers = real_project
    selected = mgral_cycle(str(project))["selected"]
    pool_before = (project / "pool.csv").read_bytes()
    ls_export = [{"id": n, "data": {"image": f"/data/local-files/?d=images/{i}.png"},
                  "annotations": [{"result": [{"type": "rectanglelabels", "original_width": 64,
                                               "original_height": 64, "value": {"x": 10, "y": 10, "width": 20,
                                                                               "height": 20,
                                                                               "rectanglelabels": ["circle"]}}]}]}
                 for n, i in enumerate(selected[:3])]
    bad = json.loads(json.dumps(ls_export))
    bad[1]["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["unicorn"]
    bad[2]["annotations"][0]["result"][0]["value"]["x"] = 95
    bad.append({"id": 9, "data": {"image": "/data/local-files/?d=../../etc/passwd"},
                "annotations": [{"result": []}]})
    bad.append({"id": 10, "data": {"mgral_id": PoolState.load(project).unlabeled_pool_ids[0]},
                "annotations": [{"result": []}]})
    bad.append(dict(ls_export[0], id=11))
    zero = json.loads(json.dumps(ls_export[2]))
    zero["id"], zero["data"] = 12, {"image": f"/data/local-files/?d=images/{selected[3]}.png"}
    zero["annotations"][0]["result"][0]["value"]["width"] = 0
    bad.append(zero)
    bad.append({"id": 13, "data": {"image": "/data/local-files/?d=/etc/hosts"}, "annotations": [{"result": []}]})
    path = project.parent / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(AnnotationImportError) as err:
        import_annotations(project, path)
    text = str(err.value)
    for expected in ("unknown class name 'unicorn'", "outside the 64x64 image", "tries to leave the project",
                     "not in an open batch", "duplicate annotation", "has zero area", "'/etc/hosts'"):
        assert expected in text
    assert (project / "pool.csv").read_bytes() == pool_before  # nothing changed

    good = project.parent / "good.json"
    good.write_text(json.dumps(ls_export))
    summary = import_annotations(project, good)
    assert sorted(summary.imported) == sorted(selected[:3])
    again = import_annotations(project, good)  # re-import: harmless
    assert again.imported == [] and sorted(again.unchanged) == sorted(selected[:3])
    pool = PoolState.load(project)
    assert set(pool.labeled_pool_ids) >= set(selected[:3]) and len(pool.pending_ids()) == 3


def test_import_coco_and_broken_inbox_file(real_project, prefect_harness):
    project, _ = real_project
    selected = mgral_cycle(str(project))["selected"]
    doc = {"images": [{"id": 1, "file_name": f"images/{selected[0]}.png"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 12]}],
           "categories": [{"id": 3, "name": "triangle"}]}
    (project / "inbox").mkdir()
    (project / "inbox" / "coco.json").write_text(json.dumps(doc))
    (project / "inbox" / "broken.json").write_text("{not json")
    summary, errors = import_inbox(project)
    assert summary.imported == [selected[0]]
    assert len(errors) == 1 and "broken.json" in errors[0]
    assert (project / "inbox" / "broken.json").exists()  # left for the user to fix
    label = (project / "labels" / f"{selected[0]}.txt").read_text().split()
    assert label[0] == "2"


def test_cli_refuses_the_oracle_ceiling_in_a_real_project(real_project, prefect_harness):
    from typer.testing import CliRunner

    from mgral_cli.main import app

    project, _ = real_project
    result = CliRunner().invoke(app, ["cycle", str(project), "--strategy", "oracle_best_of_n"])
    assert result.exit_code == 2 and "error:" in result.output
    assert "'oracle_best_of_n' is a simulation-only upper bound" in " ".join(result.output.split())
    assert not (project / "cycles").exists()  # nothing trained
