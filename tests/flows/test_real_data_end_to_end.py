"""A real team's first days, end to end through the CLI with the fake detector (through the backend registry):
the tree-crown case (a VOC folder with a minority of annotated images), a cold start from a folder of
unlabeled images only, and a detector that finds nothing."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

import flows.cycle  # noqa: F401  Prefect binds its log handlers at import: here, not to a CliRunner stream
from mgral_backends import BACKENDS
from mgral_cli.main import app
from mgral_workspace.pool import PoolState
from tests.backends.fake_detector import FakeDetectorBackend
from tests.conftest import write_params

pytestmark = pytest.mark.slow  # Prefect flow runs (seconds each with the fake detector)

CLASSES = ("crown", "shrub", "dead")
COLORS = {0: (30, 160, 40), 1: (120, 200, 90), 2: (140, 110, 80)}


def _scene(i: int) -> tuple[Image.Image, list[tuple[int, int, int, int, int]]]:
    """A 64x64 'aerial tile' with 1-2 coloured blobs; (class, x1, y1, x2, y2) per blob."""
    rng = np.random.default_rng(i)
    image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(60, 110, 3)))
    draw, objects = ImageDraw.Draw(image), []
    for _ in range(int(rng.integers(1, 3))):
        cls = int(rng.integers(0, 3))
        x1, y1 = (int(v) for v in rng.integers(2, 40, 2))
        x2, y2 = x1 + int(rng.integers(8, 22)), y1 + int(rng.integers(8, 22))
        draw.ellipse((x1, y1, x2, y2), fill=COLORS[cls])
        objects.append((cls, x1, y1, x2, y2))
    return image, objects


def _voc_minority(root: Path, n_images: int = 40, n_annotated: int = 12) -> dict[str, list]:
    """JPEGImages/ with every tile, Annotations/ with XML for the first `n_annotated`; the truth of all."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    truth = {}
    for i in range(n_images):
        image, objects = _scene(i)
        name = f"tile_{i:03d}"
        image.save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        truth[name] = objects
        if i < n_annotated:
            tags = "".join(f"<object><name>{CLASSES[c]}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{x}"
                           f"</xmax><ymax>{y}</ymax></bndbox></object>" for c, a, b, x, y in objects)
            (root / "Annotations" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename><size><width>64</width><height>64</height>"
                f"</size>{tags}</annotation>")
    return truth


def _yolo_answers(out: Path, truth: dict, image_ids) -> Path:
    """What annotators hand back for `image_ids`: a folder of YOLO label files named by image id."""
    out.mkdir(parents=True, exist_ok=True)
    for image_id in image_ids:
        lines = [f"{c} {(a + x) / 128:.6f} {(b + y) / 128:.6f} {(x - a) / 64:.6f} {(y - b) / 64:.6f}"
                 for c, a, b, x, y in truth[image_id]]
        (out / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture
def fake_backend(monkeypatch):
    """`detector.backend: fake` (or `fake_blind`) in params.yaml picks the fake detector, like any backend."""
    def start(params):  # the configured pretrained start, as the Ultralytics backend reads it
        return params.model if params.model.endswith(".pt") else params.pretrained

    monkeypatch.setitem(BACKENDS, "fake", lambda params: FakeDetectorBackend(3, imgsz=64, start=start(params)))
    monkeypatch.setitem(BACKENDS, "fake_blind", lambda params: FakeDetectorBackend(3, imgsz=64, finds_nothing=True,
                                                                                   start=start(params)))


def _params(path: Path, **overrides) -> Path:
    return write_params(path, **{"detector__backend": "fake", "tracking__version_pool": False,
                                 "selection__budget": 6, "selection__strategy": "entropy_sum", **overrides})


def _cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # rich wraps long lines


def _row(output: str, item: str) -> str:
    """The value of one row of `mgral status`'s table."""
    match = re.search(rf"│ {re.escape(item)}\s*│\s*([^│]+?)\s*│", output)
    assert match, f"no {item!r} row in: {output}"
    return match.group(1)


def test_tree_like_voc_minority_end_to_end(tmp_path, fake_backend, prefect_harness):
    """VOC, 12 of 40 tiles annotated, three classes -> init -> cycle -> export -> import of part -> status."""
    truth = _voc_minority(tmp_path / "trees")
    params = _params(tmp_path / "params.yaml")
    project = tmp_path / "project"

    out = _cli("init", project, "--from", tmp_path / "trees", "--params", params)
    assert "imported 40 images (12 labeled: 12 with objects, 0 empty; 28 unlabeled); 0 quarantined" in out
    assert "carved 1 val, 2 test out of 12 labeled images (9 labeled stay in the pool)" in out
    assert "few labels:" in out and "--eval-in-first-batch" in out  # 1 val / 2 test: says what it takes
    assert PoolState.load(project).counts() == {"labeled": 9, "unlabeled": 28, "pending": 0, "val": 1, "test": 2}

    out = _cli("cycle", project)
    assert re.search(r"cycle 1: test mAP50-95 \d\.\d{4} with 9 labeled; selected 6 images", out)
    export = project / "exports" / "cycle_001"
    selected = json.loads((project / "cycles" / "cycle_001" / "selection.json").read_text())["ids"]
    assert len(selected) == 6 and set(selected) <= set(truth)
    tasks = json.loads((export / "label_studio_tasks.json").read_text())
    assert sorted(t["data"]["mgral_id"] for t in tasks) == sorted(selected)
    assert len(list((export / "yolo_prelabels").glob("*.txt"))) == 6
    pool = PoolState.load(project)
    assert pool.counts() == {"labeled": 9, "unlabeled": 22, "pending": 6, "val": 1, "test": 2}

    answers = _yolo_answers(tmp_path / "answers", truth, selected[:4])  # annotators finished 4 of the 6
    out = _cli("import", project, answers)
    assert "imported labels for 4 images" in out
    pool = PoolState.load(project)
    assert pool.counts() == {"labeled": 13, "unlabeled": 22, "pending": 2, "val": 1, "test": 2}
    boxes = (project / "labels" / f"{selected[0]}.txt").read_text().split("\n")
    assert len([b for b in boxes if b]) == len(truth[selected[0]])

    out = _cli("status", project)
    assert _row(out, "labeled") == "13" and _row(out, "pending") == "2" and _row(out, "unlabeled") == "22"
    assert _row(out, "last batch") == "batch 1: 4/6 labeled"
    assert "WARNING" not in out


def test_cold_start_from_a_folder_of_unlabeled_images_only(tmp_path, fake_backend, prefect_harness):
    """No label at all: init gives a working project; the first cycle selects at random and hands out the batch
    with val/test images carved from the pool; the next cycle waits, naming what it waits for; once they
    come back a detector is trained."""
    truth = {}
    folder = tmp_path / "photos"
    for i in range(30):  # nested folders, every suffix case
        image, objects = _scene(100 + i)
        sub = folder / ("2024" if i % 2 else "2025/field")
        sub.mkdir(parents=True, exist_ok=True)
        suffix = (".jpg", ".PNG", ".jpeg", ".webp", ".JPG")[i % 5]
        image.save(sub / f"img{i:02d}{suffix}", format={"jpg": "JPEG", "jpeg": "JPEG"}.get(suffix[1:].lower()))
        truth[f"{sub.relative_to(folder).as_posix().replace('/', '_')}_img{i:02d}"] = objects
    params = _params(tmp_path / "params.yaml", annotation__min_eval_images=3, detector__pretrained=None)
    project = tmp_path / "project"

    out = _cli("init", project, "--unlabeled", folder, "--classes", ",".join(CLASSES), "--params", params)
    assert "imported 30 images (0 labeled: 0 with objects, 0 empty; 30 unlabeled); 0 quarantined" in out
    assert "only 0 labeled image(s), too few to carve val and test from: carved 3 val, 6 test out of the 30" in out
    pool = PoolState.load(project)
    assert pool.counts() == {"labeled": 0, "unlabeled": 21, "pending": 0, "val": 3, "test": 6}
    assert set(pool.table["image_id"]) == set(truth)
    assert _row(_cli("status", project), "val/test to label") == "9"

    out = _cli("cycle", project)
    assert "cold start: 6 images at random (no trained detector yet, and no pretrained start" in out
    assert "with them 9 val/test images to label" in out
    selection = json.loads((project / "cycles" / "cycle_001" / "selection.json").read_text())
    assert selection["strategy"] == "cold_start:random" and len(selection["ids"]) == 6
    report = json.loads((project / "cycles" / "cycle_001" / "cycle_report.json").read_text())
    assert report["selection_method"] == "cold_start:random" and report["eval_to_label"] == 9
    export = project / "exports" / "cycle_001"
    splits = dict(line.split(",") for line in (export / "splits.csv").read_text().split()[1:])
    assert sorted(splits.values()) == ["pool"] * 6 + ["test"] * 6 + ["val"] * 3
    assert {i["mgral_split"] for i in json.loads((export / "coco_images.json").read_text())["images"]} == \
        {"pool", "val", "test"}
    assert "3 of them are validation and 6 test images" in (export / "README.txt").read_text()
    assert not (project / "cycles" / "cycle_001" / "detector").exists()  # nothing trained
    assert PoolState.load(project).counts()["pending"] == 15

    out = _cli("cycle", project)  # nothing came back yet: waits, saying for what
    assert "batch 1: 0/15 labeled; waiting for annotations" in out
    assert "no labeled pool image to train on" in out and "no labeled val image (3 to label)" in out

    handed_out = sorted(splits)
    _yolo_answers(tmp_path / "part", truth, [i for i in handed_out if splits[i] == "pool"])
    _cli("import", project, tmp_path / "part")  # the pool images only: val/test still missing
    out = _cli("cycle", project)
    assert "batch 1: 6/15 labeled; waiting for annotations" in out and "no labeled test image (6 to label)" in out

    _yolo_answers(tmp_path / "rest", truth, [i for i in handed_out if splits[i] != "pool"])
    _cli("import", project, tmp_path / "rest")
    assert PoolState.load(project).counts() == {"labeled": 6, "unlabeled": 15, "pending": 0, "val": 3, "test": 6}
    out = _cli("cycle", project)
    assert re.search(r"cycle 2: test mAP50-95 \d\.\d{4} with 6 labeled; selected 6 images", out)
    runs_table = r"in the MLflow UI: http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32} "  # not GenAI's overview
    assert re.search(runs_table + r"\(after mlflow ui --backend-store-uri sqlite:///\S+mlflow\.db", out)
    assert (project / "cycles" / "cycle_002" / "detector" / "best.pt").exists()
    status = _cli("status", project)
    assert _row(status, "pending") == "6" and "val/test to label" not in status
    assert "before a detector can train" not in status


def test_cold_start_with_a_pretrained_checkpoint_selects_by_k_center(tmp_path, fake_backend, prefect_harness):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(20):
        _scene(i)[0].save(folder / f"p{i}.png")
    checkpoint = tmp_path / "pretrained.pt"
    checkpoint.write_text("{}")  # the fake backend reads nothing from weights; they must exist
    params = _params(tmp_path / "params.yaml", annotation__min_eval_images=2, detector__model=str(checkpoint),
                     selection__budget=4)
    project = tmp_path / "project"
    _cli("init", project, "--unlabeled", folder, "--classes", "a", "--params", params)
    out = _cli("cycle", project)
    expected = ("cold start: 4 images by k-center greedy on the embeddings of the pretrained detector (detector.model "
                f"{checkpoint}; no trained detector yet)")
    assert "".join(expected.split()) in "".join(out.split())  # a long path is wrapped even inside a word
    selection = json.loads((project / "cycles" / "cycle_001" / "selection.json").read_text())
    assert selection["strategy"] == "cold_start:k_center" and selection["checkpoint"] == str(checkpoint)
    # k-center greedy on the fake embeddings: the same as the core-set strategy on them
    from mgral_core.seeding import rng_for
    from mgral_core.strategies.base import PoolView
    from mgral_core.strategies.coreset import coreset

    pool = PoolState.load(project)
    fake = FakeDetectorBackend(num_classes=3, imgsz=64)
    candidates = np.asarray([i for i in pool.table["image_id"] if i not in selection["eval_ids"]])
    view = PoolView(candidates, np.stack([fake.embedding(project / f) for f in pool.files(candidates)]),
                    np.asarray([], dtype=str), np.zeros((0, fake.dim), np.float32))
    assert selection["ids"] == coreset(view, 4, rng_for(0, 1, "select"))

    builtin = _params(tmp_path / "builtin.yaml", annotation__min_eval_images=2, detector__pretrained="builtin")
    _cli("init", tmp_path / "second", "--unlabeled", folder, "--classes", "a", "--params", builtin)
    assert "k-center greedy on the embeddings of the pretrained detector (detector.pretrained 'builtin'" in \
        _cli("cycle", tmp_path / "second")

    missing = _params(tmp_path / "missing.yaml", annotation__min_eval_images=2,
                      detector__model=str(tmp_path / "gone.pt"))
    _cli("init", tmp_path / "other", "--unlabeled", folder, "--classes", "a", "--params", missing)
    result = CliRunner().invoke(app, ["cycle", str(tmp_path / "other")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: detector.model: {tmp_path / 'gone.pt'} does not exist" in result.output


def test_a_detector_that_finds_nothing_is_said_everywhere(tmp_path, fake_backend, prefect_harness):
    """Before: test mAP50-95 0.0000 cycle after cycle, and every strategy selected with no warning."""
    from mlflow.tracking import MlflowClient

    _voc_minority(tmp_path / "trees")
    params = _params(tmp_path / "params.yaml", detector__backend="fake_blind")
    project = tmp_path / "project"
    _cli("init", project, "--from", tmp_path / "trees", "--params", params)
    result = CliRunner().invoke(app, ["cycle", str(project)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "WARNING: the detector finds nothing: validation mAP50-95 0.0000 is below 0.005" in out
    assert "WARNING: the detector predicts nothing on the pool: no box on any of its 37 images" in out
    assert "a pretrained start" in out and "more epochs" in out and "more labels" in out

    report = json.loads((project / "cycles" / "cycle_001" / "cycle_report.json").read_text())
    assert report["detector_finds_nothing"] is True and len(report["warnings"]) == 2
    status = _cli("status", project)
    assert "WARNING (cycle 1): the detector finds nothing" in status
    client = MlflowClient(f"sqlite:///{project.resolve() / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name(f"mgral-{project.name}").experiment_id])[0]
    assert run.data.tags["mgral.detector_finds_nothing"] == "true"
    assert run.data.metrics["detector_finds_nothing"] == 1.0
    assert "validation mAP50-95 0.0000" in run.data.tags["mgral.warning"]

    healthy = tmp_path / "healthy"  # the same with a detector that finds things: no warning, tag false
    _cli("init", healthy, "--from", tmp_path / "trees", "--params", _params(tmp_path / "p2.yaml"))
    out = _cli("cycle", healthy)
    assert "WARNING" not in out
    client = MlflowClient(f"sqlite:///{healthy.resolve() / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name(f"mgral-{healthy.name}").experiment_id])[0]
    assert run.data.tags["mgral.detector_finds_nothing"] == "false"
