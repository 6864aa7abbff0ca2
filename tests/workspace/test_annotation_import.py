"""Imports that never lose a label: every Label Studio result type, JSON-MIN, YOLO exports with classes.txt,
image URLs matched by original name, one rule for several annotations, nothing-matched refused, the inbox."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgral_formats import load_dataset
from mgral_formats.yolo import read_yolo_label
from mgral_workspace.annotation_import import AnnotationImportError, import_annotations, import_inbox
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project

W, H = 48, 40
BATCH = ["t3", "t4", "t5", "t6", "t7"]


def _dataset(root: Path, extra: dict[str, str | None] | None = None) -> Path:
    """A YOLO dataset (classes a, b) of 48x40 images: t0-t2 labeled, t3-t7 unlabeled, v0 val, s0 test."""
    labels = {"train/t0": "0 0.5 0.5 0.2 0.2\n", "train/t1": "1 0.3 0.3 0.2 0.1\n", "train/t2": "",
              "val/v0": "0 0.5 0.5 0.2 0.2\n", "test/s0": "1 0.5 0.5 0.4 0.4\n",
              **{f"train/{i}": None for i in BATCH}, **(extra or {})}
    for key, text in labels.items():
        split, name = key.split("/")
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H)).save(root / "images" / split / f"{name}.png")
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text("names: [a, b]\ntrain: images/train\nval: images/val\ntest: images/test\n")
    return root


def _project(tmp_path: Path, extra=None, batch=BATCH) -> Path:
    dataset, _ = load_dataset(_dataset(tmp_path / "ds", extra))
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0)
    PoolState.load(project).mark_selected(list(batch), 1).save(project)
    return project


@pytest.fixture
def project(tmp_path) -> Path:
    return _project(tmp_path)


def _write(tmp_path: Path, doc, name="export.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _boxes(project: Path, image_id: str):
    boxes, classes = read_yolo_label(project / "labels" / f"{image_id}.txt", W, H)
    return np.round(boxes.astype(np.float64), 1).tolist(), classes.tolist()


def _result(kind: str, value: dict, rid: str = "r1", **extra) -> dict:
    return {"id": rid, "type": kind, "from_name": "label", "to_name": "image", "original_width": W,
            "original_height": H, "value": value, **extra}


def _task(task_id, image_id, result, **annotation) -> dict:
    return {"id": task_id, "data": {"mgral_id": image_id}, "annotations": [{"id": task_id * 10, "result": result,
                                                                            **annotation}]}


def _refusal(project: Path, source: Path, **kwargs) -> str:
    before = (project / "pool.csv").read_bytes()
    labels_before = sorted(p.name for p in (project / "labels").iterdir())
    with pytest.raises(AnnotationImportError) as err:
        import_annotations(project, source, **kwargs)
    assert (project / "pool.csv").read_bytes() == before
    assert sorted(p.name for p in (project / "labels").iterdir()) == labels_before  # no (empty) label file
    return str(err.value)


# 1. every Label Studio result with a box becomes a box; the others refuse their task ----------------

def test_polygons_and_rectangle_label_pairs_become_boxes(project, tmp_path):
    polygon = _result("polygonlabels", {"points": [[10, 20], [50, 25], [30, 60]], "polygonlabels": ["b"]})
    pair = [_result("rectangle", {"x": 25, "y": 25, "width": 50, "height": 50, "rotation": 0}, rid="box7"),
            _result("labels", {"x": 25, "y": 25, "width": 50, "height": 50, "rotation": 0, "labels": ["a"]},
                    rid="box7")]
    ellipse = _result("ellipselabels", {"x": 50, "y": 50, "radiusX": 25, "radiusY": 25, "rotation": 90,
                                        "ellipselabels": ["a"]})
    export = [_task(1, "t3", [polygon]), _task(2, "t4", pair), _task(3, "t5", [ellipse])]
    summary = import_annotations(project, _write(tmp_path, export))
    assert summary.imported == ["t3", "t4", "t5"]
    assert _boxes(project, "t3") == ([[4.8, 8.0, 24.0, 24.0]], [1])  # the polygon's bounding box, in pixels
    assert _boxes(project, "t4") == ([[12.0, 10.0, 36.0, 30.0]], [0])  # the rectangle, its class from `labels`
    assert _boxes(project, "t5") == ([[14.0, 8.0, 34.0, 32.0]], [0])  # a 12 x 10 px-radius ellipse turned upright


def test_a_rotated_rectangle_becomes_the_box_around_it(project, tmp_path):
    # Label Studio turns a rectangle about its top-left corner, clockwise: 90 degrees swings it to the left
    value = {"x": 50, "y": 10, "width": 20, "height": 20, "rotation": 90, "rectanglelabels": ["a"]}
    import_annotations(project, _write(tmp_path, [_task(1, "t3", [_result("rectanglelabels", value)])]))
    assert _boxes(project, "t3") == ([[16.0, 4.0, 24.0, 13.6]], [0])  # 9.6 x 8 px turned into 8 x 9.6 px


def test_regions_without_a_box_refuse_their_task_by_name_and_type(project, tmp_path):
    keypoint = _result("keypointlabels", {"x": 10, "y": 10, "width": 1, "keypointlabels": ["a"]})
    brush = _result("brushlabels", {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["b"]})
    text = _refusal(project, _write(tmp_path, [_task(1, "t3", [keypoint]), _task(2, "t4", [brush])]))
    assert "export.json task 1 box 0: result r1 is a 'keypointlabels' region, which has no box" in text
    assert "export.json task 2 box 0: result r1 is a 'brushlabels' region, which has no box" in text


def test_a_rectangle_without_its_labels_and_a_rotation_without_a_size_are_refused(project, tmp_path):
    lonely = _result("rectangle", {"x": 25, "y": 25, "width": 50, "height": 50})
    turned = {"id": "r2", "type": "rectanglelabels",
              "value": {"x": 5, "y": 5, "width": 10, "height": 10, "rotation": 30, "rectanglelabels": ["a"]}}
    text = _refusal(project, _write(tmp_path, [_task(1, "t3", [lonely]), _task(2, "t4", [turned])]))
    assert "task 1 box 0: rectangle without a label" in text
    assert "task 2 box 0: rotated rectangle (rotation 30) needs original_width and original_height" in text


def test_per_image_results_are_ignored_with_a_warning_and_an_empty_result_is_an_empty_label(project, tmp_path):
    choice = {"id": "c1", "type": "choices", "from_name": "quality", "to_name": "image", "value": {"choices": ["ok"]}}
    summary = import_annotations(project, _write(tmp_path, [_task(1, "t3", [choice]), _task(2, "t4", [])]))
    assert summary.imported == ["t3", "t4"] and _boxes(project, "t3") == ([], [])
    assert any("task 1: ignored 1 'choices' result(s)" in w for w in summary.warnings)


def test_a_box_annotated_on_an_image_of_another_shape_is_refused(project, tmp_path):
    value = {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["a"]}
    turned = dict(_result("rectanglelabels", value), original_width=H, original_height=W)  # EXIF-turned view
    text = _refusal(project, _write(tmp_path, [_task(1, "t3", [turned])]))
    assert "task 1: annotated on a 40x48 image, but the project's image t3 is 48x40" in text
    scaled = dict(_result("rectanglelabels", value), original_width=2 * W, original_height=2 * H)
    assert import_annotations(project, _write(tmp_path, [_task(1, "t3", [scaled])])).imported == ["t3"]


# 3. several annotations per task, several labels per box -----------------------------------------

def test_the_latest_completed_annotation_wins_with_a_warning_and_two_labels_on_a_box_are_refused(project, tmp_path):
    def box(x, label):
        return [_result("rectanglelabels", {"x": x, "y": 10, "width": 10, "height": 10, "rectanglelabels": [label]})]

    task = {"id": 5, "data": {"mgral_id": "t3"}, "annotations": [
        {"id": 1, "result": box(10, "a"), "updated_at": "2026-01-02T10:00:00Z"},
        {"id": 2, "result": box(50, "b"), "updated_at": "2026-01-03T10:00:00.000000Z"},  # the latest completed
        {"id": 3, "result": box(80, "a"), "updated_at": "2026-01-04T10:00:00Z", "was_cancelled": True},
        {"id": 4, "result": box(20, "a"), "created_at": "2026-01-01T09:00:00Z"}]}
    summary = import_annotations(project, _write(tmp_path, [task]))
    assert _boxes(project, "t3") == ([[24.0, 4.0, 28.8, 8.0]], [1])
    assert summary.warnings == ["export.json task 5: 3 completed annotations; used annotation 2 (the most recently "
                                "updated), the others ignored"]
    two = _result("rectanglelabels", {"x": 10, "y": 10, "width": 10, "height": 10, "rectanglelabels": ["a", "b"]})
    same_id = [_result("rectanglelabels", {"x": 10, "y": 10, "width": 10, "height": 10, "rectanglelabels": ["a"]}),
               _result("labels", {"x": 10, "y": 10, "width": 10, "height": 10, "labels": ["b"]})]
    text = _refusal(project, _write(tmp_path, [_task(1, "t4", [two]), _task(2, "t5", same_id)]))
    assert "task 1 box 0: rectangle with 2 different labels ['a', 'b']: a box needs exactly one class" in text
    assert "task 2 box 0: rectangle with 2 different labels ['a', 'b']" in text


# 4. exports accepted or refused, never "0 images" -------------------------------------------------

def test_json_min_export_is_imported(project, tmp_path):
    def box(x, label, **extra):
        return {"x": x, "y": 10, "width": 10, "height": 10, "rotation": 0, "rectanglelabels": [label],
                "original_width": W, "original_height": H, **extra}

    meta = {"annotator": "a@example.com", "lead_time": 3.2}
    export = [  # Label Studio's JSON-MIN: the task's data fields, its id, one list of region values per control
        {"image": "/data/local-files/?d=images/t3.png", "mgral_id": "t3", "id": 11, "annotation_id": 7,
         "label": [box(10, "a"), box(50, "b")], "created_at": "2026-01-02T10:00:00Z", **meta},
        {"image": "/data/upload/3/0a1b2c3d-t4.png", "id": 12, "annotation_id": 8,
         "label": [box(20, "b")], "updated_at": "2026-01-02T10:00:00Z", **meta},
        {"image": "/data/upload/3/0a1b2c3d-t4.png", "id": 12, "annotation_id": 9,  # a later annotation of task 12
         "label": [box(30, "a")], "updated_at": "2026-01-05T10:00:00Z", **meta},
        {"image": "/data/local-files/?d=images/t5.png", "id": 13, "annotation_id": 10, **meta},  # no box: empty
        {"image": "/data/local-files/?d=images/t6.png", "id": 14, "annotation_id": 11, "quality": "sharp",
         "bbox": [{"x": 5, "y": 5, "width": 50, "height": 50, "rotation": 0, "original_width": W,
                   "original_height": H}],
         "cls": [{"x": 5, "y": 5, "width": 50, "height": 50, "rotation": 0, "labels": ["b"], "original_width": W,
                  "original_height": H}], **meta}]
    summary = import_annotations(project, _write(tmp_path, export))
    assert summary.imported == ["t3", "t4", "t5", "t6"]
    assert _boxes(project, "t3") == ([[4.8, 4.0, 9.6, 8.0], [24.0, 4.0, 28.8, 8.0]], [0, 1])
    assert _boxes(project, "t4") == ([[14.4, 4.0, 19.2, 8.0]], [0])
    assert _boxes(project, "t5") == ([], []) and _boxes(project, "t6") == ([[2.4, 2.0, 26.4, 22.0]], [1])
    assert any("task 12: 2 annotations; used annotation 9" in w for w in summary.warnings)


def _yolo_export(root: Path, labels: dict[str, str], classes: str) -> Path:
    """Label Studio's YOLO export: images/, labels/ (named after the uploaded files), classes.txt, notes.json."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, text in labels.items():
        Image.new("RGB", (W, H)).save(root / "images" / f"{name}.png")
        (root / "labels" / f"{name}.txt").write_text(text)
    (root / "classes.txt").write_text(classes)
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": i, "name": n}
                                                                for i, n in enumerate(classes.split())]}))
    return root


def test_a_yolo_export_with_classes_txt_is_read_by_class_name(project, tmp_path):
    export = _yolo_export(tmp_path / "yolo", {"0a1b2c3d-t3": "0 0.5 0.5 0.2 0.2\n", "t4": "1 0.25 0.25 0.1 0.1\n"},
                          "b\na\n")  # its own class order
    summary = import_annotations(project, export)
    assert summary.imported == ["t3", "t4"]
    assert _boxes(project, "t3")[1] == [1] and _boxes(project, "t4")[1] == [0]  # ids mapped by name: b=1, a=0
    assert any("upload prefix removed" in n and "t3" in n for n in summary.notes)
    other = _yolo_export(tmp_path / "other", {"t5": "0 0.5 0.5 0.2 0.2\n"}, "a\nunicorn\n")
    text = _refusal(project, other)
    assert "classes.txt: class names ['unicorn'] are not the project's classes ['a', 'b']" in text


def test_imports_that_match_no_image_are_refused(project, tmp_path):
    pending = [{"id": 1, "data": {"mgral_id": "t3"}, "annotations": [],
                "predictions": [{"result": []}]},
               {"id": 2, "data": {"mgral_id": "t4"}, "annotations": [{"was_cancelled": True, "result": []}]}]
    text = _refusal(project, _write(tmp_path, pending))
    assert "export.json: nothing to import, no annotated image" in text
    assert "1 task(s) with only predictions, no annotation" in text and "1 task(s) with only cancelled" in text
    assert "an empty list, no task to import" in _refusal(project, _write(tmp_path, []))
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    assert "'images' is empty, no image to import" in _refusal(project, _write(tmp_path, doc))
    (tmp_path / "empty").mkdir()
    assert "no YOLO label file" in _refusal(project, tmp_path / "empty")
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "t3.xml").write_text("<annotation/>")
    assert "Pascal VOC XML is not an import format" in _refusal(project, tmp_path / "voc")


# 5. image references: uploads, buckets, web addresses, by mgral_id or original name ------------------

def _by_url(task_id, url, x=10):
    value = {"x": x, "y": 10, "width": 10, "height": 10, "rectanglelabels": ["a"]}
    return {"id": task_id, "data": {"image": url}, "annotations": [{"result": [_result("rectanglelabels", value)]}]}


def test_image_urls_are_matched_by_original_file_name_and_say_so(project, tmp_path):
    table = PoolState.load(project).table.set_index("image_id")
    assert table.loc["t3", "original_name"] == "images/train/t3.png"  # recorded at init
    export = [_by_url(1, "/data/upload/3/0a1b2c3d-t3.png"), _by_url(2, "s3://bucket/photos/t4.png"),
              _by_url(3, "gs://bucket/t5.png"), _by_url(4, "https://example.com/media/t6.png?sig=1"),
              _by_url(5, "/data/local-files/?d=somewhere%2Fimages%2Ftrain%2Ft7.png")]
    summary = import_annotations(project, _write(tmp_path, export))
    assert summary.imported == BATCH
    notes = " ".join(summary.notes)
    assert "by project file name from a Label Studio upload: export.json task 1 -> t3" in notes
    assert "from a s3 URL: export.json task 2 -> t4" in notes and "from a gs URL" in notes
    assert "from a URL: export.json task 4 -> t6" in notes
    assert "by original name 'images/train/t7.png': export.json task 5 -> t7" in notes


def test_coco_file_names_and_urls_are_matched_by_original_name(project, tmp_path):
    doc = {"images": [{"id": 1, "file_name": "images/0a1b2c3d-t3.png", "width": W, "height": H},  # Label Studio's COCO
                      {"id": 2, "file_name": "https://example.com/t4.png"},
                      {"id": 3, "file_name": "t5.png", "width": H, "height": W}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 2, 10, 12]}],
           "categories": [{"id": 0, "name": "b"}]}
    text = _refusal(project, _write(tmp_path, doc))
    assert text.count("export.json image") == 1  # only image 3, whose size is not the project image's
    assert "export.json image 3: annotated on a 40x48 image, but the project's image t5 is 48x40" in text
    doc["images"].pop()
    summary = import_annotations(project, _write(tmp_path, doc))
    assert summary.imported == ["t3", "t4"] and _boxes(project, "t3") == ([[1.0, 2.0, 11.0, 14.0]], [1])
    assert any("Label Studio's upload prefix removed" in n and "image 1 -> t3" in n for n in summary.notes)


def test_a_malformed_url_names_its_task(project, tmp_path):
    text = _refusal(project, _write(tmp_path, [_by_url(1, "t3.png"), _by_url(42, "http://[broken/t4.png")]))
    assert "export.json task 42: malformed image URL 'http://[broken/t4.png' (Invalid IPv6 URL)" in text
    assert "task 1:" not in text


def test_names_that_fit_two_images_are_refused_naming_both(tmp_path):
    project = _project(tmp_path, {"train/a b": None, "train/a_b": None}, batch=["a_b", "a_b_2"])
    table = PoolState.load(project).table.set_index("original_name")
    assert table.loc["images/train/a b.png", "image_id"] == "a_b"  # 'a b.png' took the id a_b ...
    assert table.loc["images/train/a_b.png", "image_id"] == "a_b_2"  # ... so 'a_b.png' became a_b_2
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a_b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    text = _refusal(project, tmp_path / "labels")
    assert ("a_b.txt: image 'a_b' is ambiguous: it fits 2 project images, a_b (by its id), a_b_2 (by its original "
            "name 'images/train/a_b.png')") in text
    text = _refusal(project, _write(tmp_path, [_by_url(3, "https://example.com/a_b.png")]))
    assert "task 3: image 'a_b.png' (from a URL: 'https://example.com/a_b.png') is ambiguous" in text
    export = [dict(_by_url(3, "https://example.com/a_b.png"), data={"mgral_id": "a_b_2"})]
    assert import_annotations(project, _write(tmp_path, export)).imported == ["a_b_2"]  # mgral_id settles it


def test_a_pool_table_without_original_names_still_loads_and_imports(project, tmp_path):
    pool_csv = project / "pool.csv"
    lines = pool_csv.read_text().splitlines()
    assert lines[0].endswith(",original_name")
    pool_csv.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")  # a project made before
    assert set(PoolState.load(project).table["original_name"]) == {""}
    assert import_annotations(project, _write(tmp_path, [_by_url(1, "s3://b/t3.png")])).imported == ["t3"]


# 6. the inbox: one bad file never holds back the others ------------------------------------------

def test_one_unreadable_inbox_file_does_not_hold_back_the_others(project, tmp_path):
    inbox = project / "inbox"
    inbox.mkdir()
    good = [_by_url(1, "images/t3.png")]
    (inbox / "a_good.json").write_text(json.dumps(good))
    (inbox / "b_bad_url.json").write_text(json.dumps([_by_url(2, "http://[broken/t4.png")]))
    (inbox / "c_binary.json").write_bytes(bytes(range(256)))
    (inbox / "d_bad.json").write_text("{not json")
    (inbox / "t5.txt").mkdir()  # a directory named like a label file
    (inbox / "yolo").mkdir()
    (inbox / "yolo" / "t6.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (inbox / "yolo" / "t7.txt").mkdir()
    (inbox / "done").mkdir()
    (inbox / "done" / "a_good.json").write_text("an earlier import of the same name")
    summary, errors = import_inbox(project)
    assert summary.imported == ["t3"]
    assert [e.split(":")[0] for e in errors] == ["b_bad_url.json", "c_binary.json", "d_bad.json", "t5.txt", "yolo"]
    assert "task 2: malformed image URL" in errors[0] and "no YOLO label file" in errors[3]
    assert "yolo/t7.txt" not in errors[4] and "t7.txt: a directory, not a label file" in errors[4]
    for name in ("b_bad_url.json", "c_binary.json", "d_bad.json", "t5.txt", "yolo"):
        assert (inbox / name).exists()  # left in place for the user to fix
    assert (inbox / "done" / "a_good.json").read_text() == "an earlier import of the same name"
    assert json.loads((inbox / "done" / "a_good_2.json").read_text()) == good
    shutil.rmtree(inbox / "yolo" / "t7.txt")
    assert import_inbox(project)[0].imported == ["t6"]  # fixed: imported on the next pass


# 2. a deliberate relabel: --replace; the labels it replaces stay recoverable -------------------------

def _one_box(task_id, image_id, label, x=10):
    value = {"x": x, "y": 10, "width": 20, "height": 20, "rectanglelabels": [label]}
    return [_task(task_id, image_id, [_result("rectanglelabels", value)])]


@pytest.mark.slow  # git + DVC: about 15 s
def test_replace_relabels_and_the_replaced_labels_stay_in_the_dvc_history(project, tmp_path):
    import subprocess

    import dvc.api
    from typer.testing import CliRunner

    from mgral_cli.main import app
    from tasks.versioning import ensure_versioned
    from tests.conftest import write_params

    write_params(project / "params.yaml", tracking__version_pool=True)
    ensure_versioned(project)
    first, second = _write(tmp_path, _one_box(1, "t3", "a"), "first.json"), _write(tmp_path, _one_box(1, "t3", "b"),
                                                                                      "second.json")
    run = CliRunner().invoke(app, ["import", str(project), str(first)])
    assert run.exit_code == 0, run.output
    labels_before = (project / "labels" / "t3.txt").read_text()
    run = CliRunner().invoke(app, ["import", str(project), str(second)])
    assert run.exit_code == 2 and "t3 is already labeled (with different labels); to relabel it, import again with " \
        "--replace" in " ".join(run.output.split())
    run = CliRunner().invoke(app, ["import", str(project), str(second), "--replace"])
    assert run.exit_code == 0 and "replaced the labels of 1" in run.output, run.output
    assert _boxes(project, "t3")[1] == [1]
    log = subprocess.run(["git", "log", "--format=%s"], cwd=project, capture_output=True, text=True).stdout
    assert log.splitlines() == ["mgral: replaced labels of 1 images from second.json",
                                "mgral: imported labels for 1 images from first.json", "mgral: project created"]
    assert dvc.api.read("labels/t3.txt", repo=str(project), rev="HEAD~1") == labels_before  # the old labels


def test_replace_without_versioning_keeps_the_replaced_label_files(project, tmp_path):
    import_annotations(project, _write(tmp_path, _one_box(1, "v0", "b")), replace=True,
                       keep_replaced=tmp_path / "kept")  # a val image: relabeling is not only for the pool
    assert (tmp_path / "kept" / "v0.txt").read_text() == "0 0.500000 0.500000 0.200000 0.200000\n"
    assert _boxes(project, "v0")[1] == [1]
    again = import_annotations(project, _write(tmp_path, _one_box(1, "v0", "b")))
    assert again.unchanged == ["v0"] and again.replaced == []
    (project / "labels" / "t0.txt").unlink()  # a labeled image whose label file went missing: refused, no traceback
    text = _refusal(project, _write(tmp_path, _one_box(1, "t0", "a")))
    assert "t0 is already labeled (with different labels); to relabel it, import again with --replace" in text
