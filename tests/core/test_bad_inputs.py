"""The bad-input catalogue of docs/RELIABILITY.md: image modes and sizes, negative and malformed boxes,
duplicate ids, path traversal, malformed annotation exports, CLI user errors, a diverging training."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import mgral_formats.common as formats_common
from mgral_workspace.annotation_import import AnnotationImportError, import_annotations
from mgral_formats import load_dataset
from mgral_formats.yolo import read_yolo_label
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project

BIN = Path(sys.executable).parent


def _image(path, size=(48, 40), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def _yolo(root, labels, names=("a", "b")):
    """A YOLO dataset: {split/name: label text or None (unlabeled)}, 48x40 RGB images."""
    for key, text in labels.items():
        split, name = key.split("/")
        _image(root / "images" / split / f"{name}.png")
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text(f"names: {list(names)}\ntrain: images/train\nval: images/val\n"
                                    "test: images/test\n")
    return root


GOOD = {"train/t0": "0 0.5 0.5 0.2 0.2\n", "train/t1": "1 0.3 0.3 0.2 0.1\n", "train/t2": "",
        "val/v0": "0 0.5 0.5 0.2 0.2\n", "test/s0": "1 0.5 0.5 0.4 0.4\n"}


def _coco(root, images, annotations, categories=({"id": 1, "name": "a"},), image_files=("x.png", "y.png")):
    for name in image_files:
        _image(root / "images" / name)
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": list(categories)}))
    return root


def _voc(root, file_name, box=(5, 6, 20, 30), name="dog"):
    _image(root / "JPEGImages" / "im1.jpg", (50, 50))
    tags = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / "im1.xml").write_text(
        f"<annotation><filename>{file_name}</filename><object><name>{name}</name><bndbox>{tags}</bndbox>"
        "</object></annotation>")
    return root


def _kinds(report):
    return {p.kind: p.message for p in report.problems}


# images: modes and sizes ----------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "suffix"), [
    ("RGBA", ".png"), ("LA", ".png"), ("P", ".png"), ("1", ".png"), ("L", ".png"), ("CMYK", ".jpg"),
    ("I;16", ".png"), ("I;16", ".tif"),
])
def test_image_modes_are_converted_to_8bit_rgb(tmp_path, mode, suffix):
    root = _yolo(tmp_path / "ds", GOOD)
    (root / "images/train/t1.png").unlink()
    if mode == "I;16":
        Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(root / f"images/train/t1{suffix}")
    else:
        image = Image.new(mode, (48, 40))
        if mode == "P":
            image.info["transparency"] = 0
        image.save(root / f"images/train/t1{suffix}")
    dataset, report = load_dataset(root)
    assert report.problems == [] and len(dataset.images) == 5
    project = init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=3)
    converted = Image.open(project / "images" / "t1.png")
    assert (converted.mode, converted.size) == ("RGB", (48, 40))
    _, classes = read_yolo_label(project / "labels" / "t1.txt", 48, 40)
    assert classes.tolist() == [1]


@pytest.mark.parametrize("pillow_guard", ["default", "disabled"])
def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, pillow_guard):
    """12000 x 12000 (144 MP): above MGRAL's limit, quarantined without being decoded."""
    if pillow_guard == "disabled":  # what Ultralytics' compress_one_image does to the global
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    root = _yolo(tmp_path / "ds", GOOD)
    Image.new("1", (12000, 12000)).save(root / "images/train/t1.png")  # 18 kB on disk
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or None)
    dataset, report = load_dataset(root)
    message = _kinds(report)["image too large"]
    assert "12000x12000 = 144.0 megapixels" in message and "tile or downscale" in message
    assert str(root / "images/train/t1.png") in report.quarantined
    assert (12000, 12000) not in decoded
    assert sorted(r.name for r in dataset.images) == ["s0", "t0", "t2", "v0"]


def test_decompression_bomb_error_becomes_a_message(tmp_path):
    """14000 x 14000 (196 MP): Pillow itself raises DecompressionBombError on open."""
    root = _yolo(tmp_path / "ds", GOOD)
    Image.new("1", (14000, 14000)).save(root / "images/train/t1.png")
    dataset, report = load_dataset(root)
    assert "decompression bomb" in _kinds(report)["image too large"]
    assert len(dataset.images) == 4
    project = init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=1, report=report)
    assert "image too large" in (project / "quarantine" / "import_report.txt").read_text()


def test_pixel_limit_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr(formats_common, "MAX_IMAGE_PIXELS", 48 * 40)
    root = _yolo(tmp_path / "ds", GOOD)
    _image(root / "images/train/t1.png", (49, 40))
    dataset, report = load_dataset(root)
    assert [p.file for p in report.problems] == [str(root / "images/train/t1.png")]
    assert len(dataset.images) == 4  # the 48x40 ones, exactly at the limit, are accepted


# labels: negative, malformed, unknown, duplicate --------------------------------------------------

@pytest.mark.parametrize(("line", "kind", "text"), [
    ("0 -0.2 0.5 0.1 0.1", "box outside image", "outside the 48x40 image"),
    ("0 0.5 -0.3 0.2 0.2", "box outside image", "outside"),
    ("0 0.5 0.5 -0.1 0.1", "zero-area box", "negative width or height"),
    ("-1 0.5 0.5 0.1 0.1", "unknown class", "class id -1 not in 0..1"),
    ("0 0.5 0.5 0.1", "bad label file", "expected 'class cx cy w h'"),
    ("0.0 0.5 0.5 0.1 0.1", "bad label file", "non-numeric"),
    ("0 inf 0.5 0.1 0.1", "invalid box", "NaN or infinite"),
])
def test_yolo_negative_and_malformed_labels(tmp_path, line, kind, text):
    root = _yolo(tmp_path / "ds", {**GOOD, "train/t1": line + "\n"})
    dataset, report = load_dataset(root)
    assert text in _kinds(report)[kind], report.to_text()
    assert str(root / "images/train/t1.png") in report.quarantined
    assert "t1" not in {r.name for r in dataset.images}


def test_negative_coordinate_within_a_pixel_is_clipped(tmp_path):
    root = _yolo(tmp_path / "ds", {**GOOD, "train/t1": "0 0.05 0.5 0.12 0.2\n"})  # x1 = -0.48 px
    dataset, report = load_dataset(root)
    assert report.problems == []
    t1 = next(r for r in dataset.images if r.name == "t1")
    assert t1.boxes_xyxy[0, 0] == 0


def test_empty_label_file_means_labeled_without_objects(tmp_path):
    root = _yolo(tmp_path / "ds", {**GOOD, "train/t2": "", "train/u0": None})
    dataset, report = load_dataset(root)
    by_name = {r.name: r for r in dataset.images}
    assert report.problems == [] and by_name["t2"].labeled and by_name["t2"].boxes_xyxy.shape == (0, 4)
    assert not by_name["u0"].labeled  # no label file at all: unlabeled
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0)
    pool = PoolState.load(project)
    assert "t2" in set(pool.labeled_pool_ids) and "u0" in set(pool.unlabeled_pool_ids)
    assert (project / "labels" / "t2.txt").read_text() == ""


def test_yolo_label_that_is_not_text(tmp_path):
    root = _yolo(tmp_path / "ds", GOOD)
    (root / "labels/train/t1.txt").write_bytes(b"\xff\xfe\x00binary")
    _, report = load_dataset(root)
    assert "not a text file" in _kinds(report)["bad label file"]


@pytest.mark.parametrize(("text", "message"), [
    ("names: [a, b\ntrain: images/train\n", "not valid YAML"),
    ("names: abc\ntrain: images/train\n", "'names' must be a list"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_malformed_data_yaml_names_the_file(tmp_path, text, message):
    root = _yolo(tmp_path / "ds", GOOD)
    (root / "data.yaml").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_dataset(root)
    assert str(root / "data.yaml") in str(err.value)


@pytest.mark.parametrize(("bbox", "kind", "text"), [
    ([-5, 2, 10, 10], "box outside image", "box [-5.0, 2.0, 5.0, 12.0] outside the 48x40 image"),
    ([2, -4, 10, 10], "box outside image", "outside"),
    ([20, 2, -10, 10], "zero-area box", "negative width or height"),
    ([1, 1, 5], "invalid box", "bbox must be 4 numbers"),
    (["1", 1, 5, 5], "invalid box", "bbox must be 4 numbers"),
    ([1, None, 5, 5], "invalid box", "NaN"),
])
def test_coco_negative_and_malformed_boxes(tmp_path, bbox, kind, text):
    root = _coco(tmp_path / "coco", [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "y.png"}],
                 [{"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox}])
    dataset, report = load_dataset(root, "coco")
    assert text in _kinds(report)[kind], report.to_text()
    assert str(root / "images" / "x.png") in report.quarantined
    assert [r.name for r in dataset.images] == ["y"]


def test_coco_unknown_category_and_duplicate_ids(tmp_path):
    images = [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "y.png"}, {"id": 2, "file_name": "z.png"},
              {"id": 3, "file_name": "w.png"}, {"id": 4, "file_name": "v.png"}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]},
                   {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
                   {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]},
                   {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]},
                   {"id": 4, "image_id": 4, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    root = _coco(tmp_path / "coco", images, annotations, image_files=("x.png", "y.png", "z.png", "w.png", "v.png"))
    dataset, report = load_dataset(root, "coco")
    by_file = {Path(p.file).name: p.message for p in report.problems}
    assert "category id 9 not in 'categories' (ids [1])" in by_file["x.png"]
    assert "image id 2 is used by 2 entries (y.png, z.png)" in by_file["y.png"] and "z.png" in by_file
    assert "annotation id 3 appears more than once" in by_file["w.png"]
    assert [r.name for r in dataset.images] == ["v"]
    assert set(report.quarantined) == {str(root / "images" / n) for n in ("x.png", "y.png", "z.png", "w.png")}


def test_coco_malformed_entries_are_reported_not_raised(tmp_path):
    images = [{"id": 1}, "not an object", {"id": 2, "file_name": "y.png"}, {"id": 3, "file_name": "x.png"}]
    annotations = [{"id": 1, "image_id": 77, "category_id": 1, "bbox": [1, 1, 5, 5]}, ["nope"],
                   {"id": 2, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    categories = [{"id": 1, "name": "a"}, {"name": "no id"}]
    root = _coco(tmp_path / "coco", images, annotations, categories)
    dataset, report = load_dataset(root, "coco")
    kinds = [p.kind for p in report.problems]
    assert kinds.count("bad image entry") == 2 and kinds.count("annotation for missing image") == 2
    assert "bad category" in kinds
    assert sorted(r.name for r in dataset.images) == ["x", "y"] and dataset.class_names == ["a"]


def test_coco_file_that_is_not_coco(tmp_path):
    root = _coco(tmp_path / "coco", [{"id": 1, "file_name": "x.png"}], [])
    (root / "notes.json").write_text(json.dumps(["a", "list"]))
    (root / "broken.json").write_text("{not json")
    dataset, report = load_dataset(root, "coco")  # a folder: other JSON files are reported, skipped
    assert [r.name for r in dataset.images if r.labeled] == ["x"] and report.unlabeled == 1  # y.png: listed by none
    assert {Path(p.file).name for p in report.problems if p.kind == "bad annotation file"} == {"notes.json",
                                                                                              "broken.json"}
    with pytest.raises(ValueError, match="notes.json: not a COCO document"):
        load_dataset(root / "notes.json", "coco")  # a lone file must be COCO
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_dataset(root / "broken.json", "coco")


def test_voc_negative_inverted_and_nameless_boxes(tmp_path):
    _, report = load_dataset(_voc(tmp_path / "neg", "im1.jpg", (-5, 6, 20, 30)))
    assert "box [-5.0, 6.0, 20.0, 30.0] outside the 50x50 image" in _kinds(report)["box outside image"]
    _, report = load_dataset(_voc(tmp_path / "inv", "im1.jpg", (20, 6, 5, 30)))
    assert "negative width or height" in _kinds(report)["zero-area box"]
    _, report = load_dataset(_voc(tmp_path / "nameless", "im1.jpg", name=""))
    assert "object without a <name>" in _kinds(report)["unknown class"]
    root = _voc(tmp_path / "missing", "gone.jpg")
    (root / "JPEGImages" / "im1.jpg").rename(root / "JPEGImages" / "other.jpg")  # neither gone.jpg nor im1.*
    dataset, report = load_dataset(root)
    assert "gone.jpg not found in JPEGImages/" in _kinds(report)["annotation for missing image"]
    assert [(r.name, r.labeled) for r in dataset.images] == [("other", False)]  # no XML names it: unlabeled


def test_every_strategy_runs_on_a_single_class_pool():
    from mgral_core.strategies import BASELINE_STRATEGIES, get_strategy
    from tests.core.test_strategies_contract import make_pool

    pool = make_pool(num_classes=1)
    for name in sorted(BASELINE_STRATEGIES):
        ids = get_strategy(name)(pool, 6, np.random.default_rng(0))
        assert len(set(ids)) == 6 and set(ids) <= set(pool.unlabeled_ids.tolist()), name


# path traversal ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../outside.png", "images/../../outside.png", "ABSOLUTE", "..\\outside.png"])
def test_coco_file_name_cannot_leave_the_dataset(tmp_path, name):
    outside = _image(tmp_path / "outside.png")  # exists: only the rule keeps it out
    name = str(outside) if name == "ABSOLUTE" else name
    root = _coco(tmp_path / "coco", [{"id": 1, "file_name": name}, {"id": 2, "file_name": "y.png"}], [])
    dataset, report = load_dataset(root, "coco")
    assert "is absolute or contains '..'" in _kinds(report)["file name leaves the dataset"]
    assert [r.name for r in dataset.images if r.labeled] == ["y"]
    assert [r.name for r in dataset.images if not r.labeled] == ["x"]  # in the folder, listed by no entry


@pytest.mark.parametrize("name", ["../../outside.jpg", "ABSOLUTE"])
def test_voc_filename_cannot_leave_the_dataset(tmp_path, name):
    outside = _image(tmp_path / "outside.jpg", (50, 50))
    root = _voc(tmp_path / "voc", str(outside) if name == "ABSOLUTE" else name)
    dataset, report = load_dataset(root)
    assert "<filename>" in _kinds(report)["file name leaves the dataset"]
    assert [(r.name, r.labeled) for r in dataset.images] == [("im1", False)]  # outside.jpg never read


@pytest.fixture
def open_batch(tmp_path):
    """A real-labeling project (no simulation) with t3, t4 selected in cycle 1 and unlabeled."""
    labels = {**GOOD, "train/t3": None, "train/t4": None, "train/t5": None}
    dataset, _ = load_dataset(_yolo(tmp_path / "ds", labels))
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0)
    PoolState.load(project).mark_selected(["t3", "t4"], 1).save(project)
    return project


def _ls_task(task_id, image, value=None, data_key="image"):
    value = value or {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["a"]}
    return {"id": task_id, "data": {data_key: image},
            "annotations": [{"result": [{"type": "rectanglelabels", "original_width": 48, "original_height": 40,
                                         "value": value}]}]}


def _refused(project, export, tmp_path):
    before = (project / "pool.csv").read_bytes()
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    with pytest.raises(AnnotationImportError) as err:
        import_annotations(project, path)
    assert (project / "pool.csv").read_bytes() == before
    assert not (project / "labels" / "t3.txt").exists() and not (project / "labels" / "t4.txt").exists()
    return str(err.value)


def test_label_studio_import_path_traversal(open_batch, tmp_path):
    export = [_ls_task(1, "/data/local-files/?d=images/t3.png"),  # fine on its own
              _ls_task(2, "/data/local-files/?d=images%2F..%2F..%2F..%2Fetc%2Ft4.png"),
              _ls_task(3, "/data/local-files/?d=images/%2E%2E/t4.png"),
              _ls_task(4, "../t4", data_key="mgral_id"),
              _ls_task(5, "/data/local-files/?d=/etc/t4.png"),
              _ls_task(6, "/data/local-files/?d=..\\t4.png")]
    text = _refused(open_batch, export, tmp_path)
    for task in (2, 3, 4, 5, 6):
        assert f"export.json task {task}: file name" in text and "tries to leave the project" in text
    assert "task 1:" not in text


def test_coco_import_path_traversal(open_batch, tmp_path):
    doc = {"images": [{"id": 1, "file_name": "../../images/t3.png"}, {"id": 2, "file_name": "/abs/t4.png"}],
           "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    text = _refused(open_batch, doc, tmp_path)
    assert "export.json image 1: file name '../../images/t3.png' tries to leave the project" in text
    assert "export.json image 2: file name '/abs/t4.png' tries to leave the project" in text


@pytest.mark.parametrize(("value", "message"), [
    ({"y": 10, "width": 20, "height": 20, "rectanglelabels": ["a"]}, "needs numeric x, y, width, height"),
    ({"x": None, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["a"]}, "needs numeric"),
    ({"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": []}, "without a label"),
    ({"x": 10, "y": 10, "width": 20, "height": 20, "rotation": "30", "rectanglelabels": ["a"]},
     "rotation must be a number of degrees"),  # a rotated rectangle is boxed (tests/workspace/test_annotation_import.py)
    ({"x": -30, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["a"]}, "outside the 48x40 image"),
    ({"x": 10, "y": 10, "width": -5, "height": 20, "rectanglelabels": ["a"]}, "has zero area"),
])
def test_malformed_label_studio_rectangles_are_refused(open_batch, tmp_path, value, message):
    text = _refused(open_batch, [_ls_task(1, "t3", value, data_key="mgral_id")], tmp_path)
    assert "export.json task 1 box 0: " in text and message in text


def test_malformed_import_documents_are_refused(open_batch, tmp_path):
    text = _refused(open_batch, ["not a task", {"id": 2, "annotations": "nope"}], tmp_path)
    assert "export.json task #0: not a Label Studio task" in text and "export.json task #1" in text
    doc = {"images": [{"id": 1, "file_name": "t3.png"}, {"id": 1, "file_name": "t4.png"}, {"file_name": "t5.png"}],
           "annotations": [{"id": 1, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},
                           {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5]}],
           "categories": [{"id": 1, "name": "a"}]}
    text = _refused(open_batch, doc, tmp_path)
    assert "annotation 1: refers to image id 99, not in 'images'" in text
    assert "image id 1 is used by 2 image entries" in text and "needs an 'id' and a 'file_name'" in text
    doc["images"] = [{"id": 1, "file_name": "t3.png"}]
    doc["annotations"] = [{"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5]}]
    assert "category id 5 not in the file's 'categories'" in _refused(open_batch, doc, tmp_path)
    doc["annotations"] = [{"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, "5", 5]}]
    assert "bbox must be 4 numbers" in _refused(open_batch, doc, tmp_path)
    (tmp_path / "latin1.json").write_bytes(b'{"images": ["\xe9"]}')
    with pytest.raises(AnnotationImportError, match="cannot read as JSON"):
        import_annotations(open_batch, tmp_path / "latin1.json")


def test_import_of_images_not_in_the_project(open_batch, tmp_path):
    text = _refused(open_batch, [_ls_task(1, "/data/local-files/?d=images/elsewhere.png")], tmp_path)
    assert "image 'images/elsewhere.png' is not in the project" in text


# CLI: user errors are one clear line, never a traceback ---------------------------------------------

def _params_without_versioning(tmp_path):
    import yaml

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    data["tracking"]["version_pool"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_init_from_a_malformed_dataset(tmp_path):
    from mgral_cli.main import app

    root = _yolo(tmp_path / "ds", GOOD)
    (root / "data.yaml").write_text("names: [a, b\n")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--from", str(root),
                                      "--params", str(_params_without_versioning(tmp_path))])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"error: {root / 'data.yaml'}: not valid YAML" in result.output
    assert not (tmp_path / "p").exists()
    result = CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--from", str(root), "--initial", "-3"])
    assert result.exit_code == 2 and "greater than or equal to 0" in result.output


def test_cli_init_refuses_initial_without_simulate_and_a_negative_seed_names_its_key(tmp_path):
    import yaml

    from mgral_cli.main import app

    root = _yolo(tmp_path / "ds", GOOD)
    params = _params_without_versioning(tmp_path)
    result = CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--from", str(root), "--initial", "5",
                                      "--params", str(params)])
    assert result.exit_code == 2 and "error: --initial sets how many pool images start labeled in a simulation" \
        in result.output and not (tmp_path / "p").exists()
    data = yaml.safe_load(params.read_text())
    data["simulation"]["seed"] = -1
    params.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--from", str(root), "--params", str(params)])
    assert result.exit_code == 2 and "simulation.seed: Input should be greater than or equal to 0" in result.output


def test_cli_says_where_a_working_directory_params_file_came_from(tmp_path, monkeypatch):
    from mgral_cli.main import app

    root = _yolo(tmp_path / "ds", GOOD)
    work = tmp_path / "other_project"
    work.mkdir()
    (work / "params.yaml").write_text("train:\n  epochs: 3\n")  # a DVC-style params.yaml of another project
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--from", str(root)])
    assert result.exit_code == 2 and "train: Extra inputs are not permitted" in result.output
    assert "taken from the working directory" in result.output and "--params FILE" in result.output
    assert not (tmp_path / "p").exists()


def test_cli_init_reports_quarantined_files_and_succeeds(tmp_path):
    from mgral_cli.main import app

    root = _yolo(tmp_path / "ds", GOOD)
    Image.new("1", (14000, 14000)).save(root / "images/train/t1.png")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--from", str(root),
                                      "--params", str(_params_without_versioning(tmp_path))])
    assert result.exit_code == 0, result.output
    assert f"{root / 'images/train/t1.png'}: [image too large] image too large" in result.output
    assert PoolState.load(tmp_path / "p").counts()["labeled"] == 2


def test_cli_import_errors_in_a_real_process(open_batch, tmp_path):
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_ls_task(1, "/data/local-files/?d=../../t3.png")]))
    markup = tmp_path / "markup.json"  # brackets in a message are printed, not read as rich markup
    markup.write_text(json.dumps([_ls_task(1, "[/]t9", data_key="mgral_id")]))
    waiting = tmp_path / "waiting.json"  # tasks not annotated yet: refused, never "imported labels for 0 images"
    waiting.write_text(json.dumps([{"id": 1, "data": {"mgral_id": "t3"}, "annotations": []}]))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([_ls_task(7, "http://[broken/t3.png")]))
    cases = [([str(open_batch), str(export)], "tries to leave the project"),
             ([str(open_batch), str(waiting)], "nothing to import, no annotated image: 1 task(s) with no annotation"),
             ([str(open_batch), str(broken)], "export.json task 7: malformed image URL".replace("export", "broken")),
             ([str(open_batch), str(markup)], "image '[/]t9' is not in the project"),
             ([str(open_batch), str(tmp_path / "missing.json")], "not found"),
             ([str(tmp_path / "nowhere"), str(export)], "not an MGRAL project")]
    for args, message in cases:
        run = subprocess.run([str(BIN / "mgral"), "import", *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert message in " ".join(run.stderr.split()) and "Traceback" not in run.stderr + run.stdout


# a detector training whose loss becomes NaN --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_training_data(tmp_path_factory):
    from mgral_backends.ultralytics.detector import write_data_yaml
    from mgral_workspace.synthetic import SyntheticSpec, generate_dataset

    root = generate_dataset(SyntheticSpec(seed=0, image_size=64, n_pool=16, n_val=4, n_test=4),
                            tmp_path_factory.mktemp("train") / "data")
    import yaml

    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    names = list(names.values()) if isinstance(names, dict) else names
    return write_data_yaml(root.parent / "run" / "data.yaml", sorted((root / "images" / "train").glob("*.png")),
                           sorted((root / "images" / "val").glob("*.png")), names)


def _detector_params():
    from mgral_workspace.config import DetectorParams

    return DetectorParams(imgsz=64, batch=16, workers=0, cache=False)


@pytest.mark.slow
def test_nan_loss_mid_training_raises_training_diverged(tiny_training_data, tmp_path, monkeypatch):
    import mgral_backends.ultralytics.detector as detector

    def poisoned_yolo(*args, **kwargs):  # the weights turn NaN at the start of the second epoch
        model = real_yolo(*args, **kwargs)

        def poison(trainer):
            if trainer.epoch == 1:
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("nan"))

        model.add_callback("on_train_epoch_start", poison)
        return model

    real_yolo = detector.YOLO
    monkeypatch.setattr(detector, "YOLO", poisoned_yolo)
    out = tmp_path / "out"
    out.mkdir()
    (out / "best.pt").write_bytes(b"an older run's weights")
    with pytest.raises(detector.TrainingDiverged) as err:
        detector.train_detector(tiny_training_data, out, _detector_params(), epochs=2)
    assert isinstance(err.value, detector.DetectorError) and (err.value.epoch, err.value.epochs) == (2, 2)
    assert f"training loss nan at epoch 2/2 (run dir {out / 'ultralytics'})" in str(err.value)
    assert not (out / "best.pt").exists() and not (out / "ultralytics" / "weights").exists()


@pytest.mark.slow
def test_nan_warm_start_weights_fail_in_the_first_epoch(tiny_training_data, tmp_path):
    """Ultralytics alone would finish this 1-epoch fine-tune with NaN-zeroed weights and mAP 0."""
    from ultralytics import YOLO

    from mgral_backends.ultralytics.detector import TrainingDiverged, train_detector

    good = train_detector(tiny_training_data, tmp_path / "good", _detector_params(), epochs=1)
    assert good.weights.exists() and np.isfinite(good.val_map50_95)  # the guard passes a finite run
    model = YOLO(str(good.weights))  # Ultralytics' own loader, as for any warm start; no torch.load here
    with torch.no_grad():
        for tensor in model.model.parameters():
            tensor.fill_(float("nan"))
    poisoned = tmp_path / "poisoned.pt"
    model.save(poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 1/1") as err:
        train_detector(tiny_training_data, tmp_path / "fine", _detector_params(), epochs=1, init_weights=poisoned)
    assert err.value.run_dir == tmp_path / "fine" / "ultralytics" and "training loss nan" in str(err.value)
    assert not (tmp_path / "fine" / "best.pt").exists()
    from mgral_backends.ultralytics.isolated import train_detector_isolated

    with pytest.raises(TrainingDiverged, match="epoch 1/1") as child:  # the same error across the process boundary
        train_detector_isolated(tiny_training_data, tmp_path / "child", _detector_params(), epochs=1,
                                init_weights=poisoned)
    assert child.value.run_dir == tmp_path / "child" / "ultralytics"
    assert (child.value.epoch, child.value.epochs) == (1, 1)
    assert not (tmp_path / "child" / "best.pt").exists() and [p.name for p in (tmp_path / "child").iterdir()] == [
        "ultralytics"]  # nor its request and result files


def test_missing_detector_weights_are_a_clear_error(tiny_training_data, tmp_path, monkeypatch):
    from mgral_workspace.config import DetectorParams
    from mgral_backends.ultralytics.detector import DetectorError, train_detector

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DetectorError, match="detector.model: yolov8n.pt does not exist; MGRAL never downloads"):
        train_detector(tiny_training_data, tmp_path / "out", DetectorParams(model="yolov8n.pt"), epochs=1)
    with pytest.raises(DetectorError, match="gone.pt: warm-start weights not found"):
        train_detector(tiny_training_data, tmp_path / "out", _detector_params(), epochs=1,
                       init_weights=tmp_path / "gone.pt")
    assert not list(tmp_path.rglob("*.pt"))  # nothing was downloaded


def _yolo_with_yaml(tmp_path, data_yaml_text):
    root = _yolo(tmp_path / "ds", {"train/t0": "2 0.5 0.5 0.2 0.2\n", "train/t1": "5 0.3 0.3 0.2 0.1\n",
                                   "val/v0": "0 0.5 0.5 0.2 0.2\n"})
    (root / "data.yaml").write_text(data_yaml_text + "train: images/train\nval: images/val\n")
    return root


def test_yolo_sparse_class_ids_are_kept_as_given(tmp_path):
    """names {0: a, 2: c, 5: f}: class 2 stays 'c' and class 5 stays 'f' (before: compacted to a, c, f)."""
    dataset, report = load_dataset(_yolo_with_yaml(tmp_path, "names: {0: a, 2: c, 5: f}\n"), "yolo")
    assert dataset.class_names == ["a", "unused_1", "c", "unused_3", "unused_4", "f"]
    by_name = {r.name: r for r in dataset.images}
    assert by_name["t0"].classes.tolist() == [2] and by_name["t1"].classes.tolist() == [5]
    assert any(p.kind == "class ids with gaps" for p in report.problems) and not report.quarantined


def test_yolo_string_class_ids_are_numbers_not_text(tmp_path):
    names = "names: {" + ", ".join(f"'{i}': c{i}" for i in range(12)) + "}\n"
    dataset, _ = load_dataset(_yolo_with_yaml(tmp_path, names), "yolo")
    assert dataset.class_names == [f"c{i}" for i in range(12)]  # before: sorted as text, class 2 became c10


@pytest.mark.parametrize("yaml_text, message", [
    ("names: {0: a, x: b}\n", "'names' keys must be class ids"),
    ("names: [a, null]\n", "class 1 has no usable name"),
    ("names: [a, [b, c]]\n", "class 1 has no usable name"),
    ("names: [a, a]\n", "class names must be unique; \\['a'\\]"),
    ("names: [a, \"b\\nc\"]\n", "is empty or has a line break"),
    ("names: [a, '']\n", "is empty or has a line break"),
    ("names: [a, b]\npath: [x, y]\n", "'path' must be one folder"),
])
def test_yolo_bad_names_and_paths_are_named(tmp_path, yaml_text, message):
    root = _yolo_with_yaml(tmp_path, yaml_text)
    with pytest.raises(ValueError, match=f"data.yaml: .*{message}"):
        load_dataset(root, "yolo")


def test_yolo_a_number_as_a_split_is_named(tmp_path):
    root = _yolo(tmp_path / "ds", {"train/t0": "0 0.5 0.5 0.2 0.2\n"})
    (root / "data.yaml").write_text("names: [a, b]\ntrain: 5\n")
    with pytest.raises(ValueError, match="data.yaml: 'train' must be a folder or list file"):
        load_dataset(root, "yolo")


def _coco_doc(names):
    return {"images": [{"id": i + 1, "file_name": n, "width": 48, "height": 40} for i, n in enumerate(names)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 10, 10]}
                            for i in range(len(names))],
            "categories": [{"id": 1, "name": "a"}]}


def test_coco_split_files_map_to_pool_val_test_by_whole_words(tmp_path):
    """instances_train.json is the pool (before: 'no labeled pool image to start from'); 'latest' is not 'test'."""
    root = tmp_path / "coco"
    for split, names in (("train", ["t0.png", "t1.png"]), ("val", ["v0.png"]), ("test", ["s0.png"])):
        for n in names:
            _image(root / "images" / n)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(_coco_doc(names)))
    dataset, _ = load_dataset(root)
    assert sorted((r.name, r.split) for r in dataset.images) == [("s0", "test"), ("t0", "pool"), ("t1", "pool"),
                                                                  ("v0", "val")]
    latest = tmp_path / "latest"
    _image(latest / "images" / "x.png")
    (latest / "annotations_latest.json").write_text(json.dumps(_coco_doc(["x.png"])))
    assert [r.split for r in load_dataset(latest)[0].images] == [None]


def test_roboflow_coco_layout_is_detected_and_keeps_its_splits(tmp_path):
    root = tmp_path / "roboflow"
    for folder, name in (("train", "a.jpg"), ("valid", "b.jpg"), ("test", "c.jpg")):
        _image(root / folder / name)
        (root / folder / "_annotations.coco.json").write_text(json.dumps(_coco_doc([name])))
    for fmt in ("auto", "coco"):
        dataset, _ = load_dataset(root, fmt)
        assert sorted((r.name, r.split) for r in dataset.images) == [("a", "pool"), ("b", "val"), ("c", "test")]


def test_coco_crowd_regions_are_left_out_and_counted(tmp_path):
    root = tmp_path / "coco"
    _image(root / "images" / "x.png")
    doc = _coco_doc(["x.png"])
    doc["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1})
    (root / "instances.json").write_text(json.dumps(doc))
    dataset, report = load_dataset(root)
    assert len(dataset.images[0].classes) == 1  # the crowd region is not a training box
    assert [p.kind for p in report.problems] == ["crowd regions"] and not report.quarantined


def test_coco_segmentation_only_annotations_get_their_polygon_box(tmp_path):
    """Before: 'NaN or infinite coordinate [nan, nan, nan, nan]'."""
    root = tmp_path / "coco"
    _image(root / "images" / "x.png")
    doc = _coco_doc(["x.png"])
    doc["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[4, 5, 20, 6, 12, 30]]},
                          {"id": 2, "image_id": 1, "category_id": 1,
                           "segmentation": {"counts": [45, 5, 35, 5, 35, 5, 1790], "size": [40, 48]}}]
    (root / "instances.json").write_text(json.dumps(doc))
    dataset, report = load_dataset(root)
    assert report.problems == []
    np.testing.assert_allclose(dataset.images[0].boxes_xyxy, [[4, 5, 20, 30], [1, 5, 4, 10]])
    doc["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1}]
    (root / "instances.json").write_text(json.dumps(doc))
    _, report = load_dataset(root)
    assert "bbox must be 4 numbers" in report.to_text()


def test_images_under_ten_pixels_are_quarantined_at_import(tmp_path):
    """Ultralytics rejects them in training; before, import accepted them."""
    root = _yolo(tmp_path / "ds", GOOD)
    _image(root / "images/train/tiny.png", size=(9, 40))
    dataset, report = load_dataset(root, "yolo")
    assert "tiny" not in {r.name for r in dataset.images}
    assert any("image too small: 9x40 pixels" in reason for reason in report.quarantined[str(root / "images/train/tiny.png")])


def test_exif_rotated_jpeg_is_stored_upright_and_its_boxes_live_in_that_frame(tmp_path):
    """A JPEG stored 120x60 with Orientation 6 is 60x120 upright (what annotators and cv2.imread see).
    Before: recorded as 120x60, so a VOC box drawn on the upright photo was quarantined as outside."""
    import cv2

    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (120, 60), (200, 30, 30)).save(root / "JPEGImages" / "im1.jpg", exif=exif)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "im1.xml").write_text(
        "<annotation><filename>im1.jpg</filename><object><name>dog</name><bndbox><xmin>5</xmin><ymin>70</ymin>"
        "<xmax>50</xmax><ymax>115</ymax></bndbox></object></annotation>")
    for i in range(2, 12):  # upright companions, so the project has a labeled pool beside val and test
        _image(root / "JPEGImages" / f"im{i}.jpg", (50, 50))
        (root / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><object><name>dog</name><bndbox><xmin>5</xmin>"
            "<ymin>6</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    dataset, report = load_dataset(root, "voc")
    rotated = next(r for r in dataset.images if r.name == "im1")
    assert report.quarantined == {} and (rotated.width, rotated.height) == (60, 120)
    project = tmp_path / "p"
    init_project(project, dataset, simulate=False, initial_labeled=0, report=report)
    table = PoolState.load(project).table
    row = table[table["file"].str.contains("im1\\.")].iloc[0]
    stored = project / row["file"]
    assert (int(row["width"]), int(row["height"])) == (60, 120)
    assert cv2.imread(str(stored)).shape[:2] == (120, 60)  # rows = height: the frame every box lives in
    with Image.open(stored) as image:
        assert image.size == (60, 120) and image.getexif().get(0x0112, 1) == 1


def _voc_minority(root, n_images=12, n_annotated=4):
    """A VOC folder like the aerial tree-crown try: every image in JPEGImages/, XML for only a few."""
    for i in range(n_images):
        _image(root / "JPEGImages" / f"tile{i:02d}.jpg", (50, 50))
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n_annotated):
        (root / "Annotations" / f"tile{i:02d}.xml").write_text(
            f"<annotation><filename>tile{i:02d}.jpg</filename><object><name>tree</name><bndbox><xmin>5</xmin>"
            "<ymin>6</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    return root


def test_voc_images_without_xml_are_the_unlabeled_pool_and_val_test_come_from_the_labeled(tmp_path):
    """Before: 12 images, 4 XML -> a project of 4 images, 'unlabeled 0'."""
    dataset, report = load_dataset(_voc_minority(tmp_path / "voc"))
    assert report.to_text().startswith("imported 12 images (4 labeled: 4 with objects, 0 empty; 8 unlabeled)")
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report)
    counts = PoolState.load(project).counts()
    assert counts == {"labeled": 2, "unlabeled": 8, "pending": 0, "val": 1, "test": 1}
    assert any("carved 1 val, 1 test out of 4 labeled images (2 labeled stay in the pool)" in n for n in report.notes)


def test_coco_images_the_json_does_not_list_are_the_unlabeled_pool(tmp_path):
    root = tmp_path / "coco"
    names = [f"im{i}.png" for i in range(10)]
    for n in names:
        _image(root / "images" / n)
    (root / "instances.json").write_text(json.dumps(_coco_doc(names[:4])))
    dataset, report = load_dataset(root)
    assert (report.with_objects, report.unlabeled) == (4, 6)
    assert sorted(r.name for r in dataset.images if not r.labeled) == [f"im{i}" for i in range(4, 10)]


def test_few_labels_are_carved_as_fractions_of_the_labeled_and_too_few_is_explained(tmp_path):
    """YOLO, 4 labeled of 12, no val/test given (before: 'no labeled pool image to start from')."""
    labels = {f"train/t{i}": ("0 0.5 0.5 0.2 0.2\n" if i < 4 else None) for i in range(12)}
    root = _yolo(tmp_path / "ds", labels)
    (root / "data.yaml").write_text("names: [a, b]\ntrain: images/train\n")
    dataset, report = load_dataset(root, "yolo")
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report)
    assert PoolState.load(project).counts() == {"labeled": 2, "unlabeled": 8, "pending": 0, "val": 1, "test": 1}
    (few_note,) = [n for n in report.notes if n.startswith("few labels:")]  # how many it takes, and the offer
    assert "carving them from labels takes 95 labeled images, the dataset has 4" in few_note
    assert "mgral init --eval-in-first-batch" in few_note and "annotation.eval_from_unlabeled: true" in few_note
    few = {f"train/t{i}": ("0 0.5 0.5 0.2 0.2\n" if i < 2 else None) for i in range(6)}
    root = _yolo(tmp_path / "few", few)
    (root / "data.yaml").write_text("names: [a, b]\ntrain: images/train\n")
    dataset, _ = load_dataset(root, "yolo")
    with pytest.raises(ValueError, match=r"only 2 labeled image\(s\) to carve val and test from: .*3 in all"):
        init_project(tmp_path / "p2", dataset, simulate=True, initial_labeled=1)  # a simulation cannot do more
    assert not (tmp_path / "p2").exists()
