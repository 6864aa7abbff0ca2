"""`mgral init` inputs: YOLO, COCO and VOC datasets, and a specific message for each bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from mgral_formats import load_dataset
from mgral_formats.yolo import read_yolo_label
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project
from mgral_workspace.synthetic import SyntheticSpec, dataset_stats, generate_dataset


def _image(path, size=(48, 40), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128 if mode != "RGB" else (120, 130, 140)).save(path)


def _yolo(root, rows, names=("a", "b")):
    for split, name, lines in rows:
        _image(root / "images" / split / f"{name}.png")
        if lines is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text(lines)
    (root / "data.yaml").write_text(f"names: {list(names)}\ntrain: images/train\nval: images/val\ntest: images/test\n")
    return root


GOOD = [("train", "t0", "0 0.5 0.5 0.2 0.2\n"), ("train", "t1", ""), ("train", "t2", "1 0.3 0.3 0.2 0.1\n"),
        ("val", "v0", "0 0.5 0.5 0.2 0.2\n"), ("test", "s0", "1 0.5 0.5 0.4 0.4\n")]


def test_generator_is_deterministic_and_long_tailed(tmp_path):
    spec = SyntheticSpec(seed=3, image_size=64, n_pool=120, n_val=10, n_test=10)
    a, b = generate_dataset(spec, tmp_path / "a"), generate_dataset(spec, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    classes, domains = dataset_stats(a)
    assert len(classes) == 8 and set(domains.index) == {"clean", "cluttered", "degraded"}
    big = generate_dataset(SyntheticSpec(seed=0, image_size=64, n_pool=1500, n_val=5, n_test=5), tmp_path / "c")
    classes, domains = dataset_stats(big)
    assert classes["train"].min() <= 0.03 and classes["train"].max() >= 0.25
    assert domains.loc["degraded", "train"] < domains.loc["cluttered", "train"] < domains.loc["clean", "train"]
    import pandas as pd

    meta = pd.read_csv(big / "metadata.csv")
    assert (meta["n_objects"] == 0).any() and (meta["cluster_id"] >= 0).mean() > 0.2
    coco = json.loads((big / "annotations" / "instances_train.json").read_text())
    assert len(coco["annotations"]) == int(meta.loc[meta.split == "train", "n_objects"].sum())


def test_yolo_import_and_init_simulation(tmp_path):
    root = _yolo(tmp_path / "ds", GOOD)
    dataset, report = load_dataset(root)
    assert report.problems == [] and len(dataset.images) == 5
    project = init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=1, seed=0)
    pool = PoolState.load(project)
    assert pool.counts() == {"labeled": 1, "unlabeled": 2, "pending": 0, "val": 1, "test": 1}
    hidden = list((project / "oracle" / "labels").glob("*.txt"))
    assert len(hidden) == 2  # the unlabeled pool's labels are only in the oracle
    assert not any((project / "labels" / h.name).exists() for h in hidden)


def test_real_mode_missing_label_means_unlabeled(tmp_path):
    rows = GOOD[:1] + [("train", "u0", None), ("train", "u1", None)] + GOOD[3:]
    dataset, _ = load_dataset(_yolo(tmp_path / "ds", rows))
    pool = PoolState.load(init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0))
    assert pool.counts()["labeled"] == 1 and pool.counts()["unlabeled"] == 2


def test_coco_import_single_class(tmp_path):
    root = tmp_path / "coco"
    for name in ("x", "y", "z"):
        _image(root / "images" / f"{name}.png")
    doc = {"images": [{"id": i + 1, "file_name": f"{n}.png", "width": 48, "height": 40} for i, n in enumerate("xyz")],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 12], "area": 120,
                            "iscrowd": 0}],
           "categories": [{"id": 7, "name": "cell"}]}
    (root / "annotations.json").write_text(json.dumps(doc))
    dataset, report = load_dataset(root, "coco")
    assert dataset.class_names == ["cell"] and len(dataset.images) == 3 and report.problems == []
    x = next(r for r in dataset.images if r.name == "x")
    assert x.boxes_xyxy.tolist() == [[2, 3, 12, 15]] and x.classes.tolist() == [0]
    project = init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=1, val_fraction=0.34,
                           test_fraction=0.34)
    assert PoolState.load(project).counts()["val"] == 1


def test_voc_import(tmp_path):
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "im1.jpg", (50, 50))
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "im1.xml").write_text(
        "<annotation><filename>im1.jpg</filename><object><name>dog</name><bndbox><xmin>5</xmin><ymin>6</ymin>"
        "<xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    dataset, report = load_dataset(root)
    assert dataset.class_names == ["dog"] and dataset.images[0].boxes_xyxy.tolist() == [[5, 6, 20, 30]]


@pytest.mark.parametrize(("make", "kind", "text"), [
    (lambda r: (r / "images/train/t1.png").write_bytes(b""), "unreadable image", "zero-byte"),
    (lambda r: (r / "images/train/t1.png").write_bytes(b"this is text, not a png"), "unreadable image", "not an image"),
    (lambda r: (r / "images/train/t1.png").write_bytes((r / "images/train/t0.png").read_bytes()[:60]),
     "unreadable image", "truncated"),
    (lambda r: (r / "labels/train/t2.txt").write_text("5 0.5 0.5 0.1 0.1\n"), "unknown class", "class id 5"),
    (lambda r: (r / "labels/train/t2.txt").write_text("0 0.95 0.5 0.5 0.1\n"), "box outside image", "outside"),
    (lambda r: (r / "labels/train/t2.txt").write_text("0 0.5 0.5 0 0.1\n"), "zero-area box", "no area"),
    (lambda r: (r / "labels/train/t2.txt").write_text("0 nan 0.5 0.1 0.1\n"), "invalid box", "NaN"),
    (lambda r: (r / "labels/train/t2.txt").write_text("0 0.5 0.5\n"), "bad label file", "expected"),
    (lambda r: _image(r / "images/val/t0.png"), "duplicate name", "also used by"),
])
def test_bad_input_is_reported_and_quarantined(tmp_path, make, kind, text):
    root = _yolo(tmp_path / "ds", GOOD)
    make(root)
    dataset, report = load_dataset(root)
    problems = [p for p in report.problems if p.kind == kind]
    assert problems and text in problems[0].message, report.to_text()
    assert problems[0].file in report.quarantined
    assert len(dataset.images) == (5 if kind == "duplicate name" else 4)  # the bad image is left out
    project = init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=1, report=report)
    assert kind in (project / "quarantine" / "import_report.txt").read_text()


def test_coco_annotation_for_missing_image_is_reported(tmp_path):
    root = tmp_path / "coco"
    _image(root / "images" / "x.png")
    doc = {"images": [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "gone.png"}],
           "annotations": [{"id": 9, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]}],
           "categories": [{"id": 1, "name": "a"}]}
    (root / "a.json").write_text(json.dumps(doc))
    _, report = load_dataset(root, "coco")
    kinds = {p.kind: p.message for p in report.problems}
    assert "image id 3" in kinds["annotation for missing image"] and "gone.png" in kinds["missing image"]


def test_init_is_atomic(tmp_path, monkeypatch):
    dataset, _ = load_dataset(_yolo(tmp_path / "ds", GOOD))
    import mgral_workspace.project as project_module

    def explode(*args, **kwargs):
        raise RuntimeError("disk died")

    monkeypatch.setattr(project_module.PoolState, "save", explode)
    with pytest.raises(RuntimeError):
        init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=1)
    assert not (tmp_path / "p").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_grayscale_and_16bit_images_are_converted(tmp_path):
    root = _yolo(tmp_path / "ds", GOOD)
    Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(root / "images/train/t1.png")
    Image.new("L", (48, 40), 90).save(root / "images/train/t2.png")
    dataset, report = load_dataset(root)
    assert report.problems == []
    project = init_project(tmp_path / "p", dataset, simulate=True, initial_labeled=3)
    for name in ("t1", "t2"):
        assert Image.open(project / "images" / f"{name}.png").mode == "RGB"
    boxes, classes = read_yolo_label(project / "labels" / "t2.txt", 48, 40)
    assert classes.tolist() == [1]


def test_every_exporter_is_callable_and_every_format_error_is_a_format_error():
    import mgral_formats
    from mgral_formats.coco import CocoFormatError
    from mgral_formats.common import FormatError
    from mgral_formats.label_studio import LabelStudioFormatError
    from mgral_formats.voc import VocFormatError
    from mgral_formats.yolo import YoloFormatError

    assert set(mgral_formats.EXPORTERS) == {"label_studio", "coco", "yolo"}
    assert all(callable(write) for write in mgral_formats.EXPORTERS.values())
    assert set(mgral_formats.READERS) == {"yolo", "coco", "voc"}
    for error in (YoloFormatError, CocoFormatError, VocFormatError, LabelStudioFormatError):
        assert issubclass(error, FormatError) and issubclass(error, ValueError)
