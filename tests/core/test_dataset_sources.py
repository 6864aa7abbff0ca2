"""Where a dataset's images come from: VOC `<filename>` against the XML's own name, symbolic links in and out
of the dataset, and a separate folder of unlabeled images (`mgral init --unlabeled`)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgral_formats import load_dataset
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_project


def _image(path: Path, size=(50, 50), color=(90, 120, 150)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _xml(root: Path, stem: str, file_name: str, box=(5, 6, 20, 30), name="tree") -> Path:
    tags = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{file_name}</filename><object><name>{name}</name><bndbox>{tags}"
                    "</bndbox></object></annotation>")
    return path


def _problems(report, kind):
    return [p for p in report.problems if p.kind == kind]


def _records(dataset):
    return {r.name: r for r in dataset.images}


# VOC <filename> against the XML's own name -------------------------------------------------------

def test_voc_filename_disagreeing_with_the_xml_never_moves_boxes_to_the_wrong_image(tmp_path):
    """The tree-crown case: a.xml says <filename>b.jpg</filename>. Before: b.jpg got a.xml's boxes, b.xml was
    refused as a duplicate and a.jpg disappeared without a word."""
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "a.jpg")
    _image(root / "JPEGImages" / "b.jpg")
    _xml(root, "a", "b.jpg", box=(1, 1, 10, 10))
    _xml(root, "b", "b.jpg", box=(20, 20, 40, 40))
    dataset, report = load_dataset(root)
    records = _records(dataset)
    assert set(records) == {"a", "b"}  # nothing disappears
    assert records["b"].labeled and records["b"].boxes_xyxy.tolist() == [[20, 20, 40, 40]]  # b.xml's own boxes
    assert not records["a"].labeled  # a.xml could describe a.jpg or b.jpg: not used
    conflict = _problems(report, "filename conflict")
    assert len(conflict) == 1 and conflict[0].file.endswith("a.xml")
    assert "'b.jpg' disagrees with the XML's own name 'a'" in conflict[0].message
    assert "both JPEGImages/b.jpg and JPEGImages/a.jpg exist" in conflict[0].message


def test_voc_filename_mismatch_with_one_existing_image_is_used_with_a_warning(tmp_path):
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "c.jpg")
    _xml(root, "c", "renamed_since.jpg")  # a stale <filename> after the files were renamed
    dataset, report = load_dataset(root)
    assert _records(dataset)["c"].labeled
    (warning,) = _problems(report, "filename mismatch")
    assert "only JPEGImages/c.jpg exists, so the boxes go to it" in warning.message
    assert not report.quarantined


def test_voc_two_xmls_naming_one_image_are_refused_naming_both(tmp_path):
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "e.jpg")
    _image(root / "JPEGImages" / "f.jpg")
    _xml(root, "d", "e.jpg")  # there is no d.*: its <filename> names e.jpg, which e.xml names too
    _xml(root, "e", "e.jpg")
    dataset, report = load_dataset(root)
    records = _records(dataset)
    assert "e" not in records and not records["f"].labeled
    (conflict,) = _problems(report, "annotation conflict")
    assert conflict.file.endswith("e.jpg") and "d.xml" in conflict.message and "e.xml" in conflict.message
    assert str(root / "JPEGImages" / "e.jpg") in report.quarantined


# symbolic links ------------------------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path):
    """Files outside every dataset: an image, a secret text file, and a folder of images."""
    out = tmp_path / "outside"
    _image(out / "photo.png", color=(1, 2, 3))
    (out / "secret.txt").write_text("password=hunter2\n")
    _image(out / "folder" / "more.png")
    return out


def _yolo_with_links(root: Path, outside: Path) -> Path:
    train = root / "images" / "train"
    _image(train / "t0.png")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "t0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (train / "stolen.png").symlink_to(outside / "photo.png")
    (train / "passwd.png").symlink_to(outside / "secret.txt")
    (train / "far").symlink_to(outside / "folder", target_is_directory=True)
    _image(root / "extra" / "inside.png")
    (train / "alias.png").symlink_to(root / "extra" / "inside.png")  # a link that stays inside: fine
    (train / "near").symlink_to(root / "extra" / "sub", target_is_directory=True)
    _image(root / "extra" / "sub" / "deep.png")
    _image(train / "t1.png")
    (root / "labels" / "train" / "t1.txt").symlink_to(outside / "secret.txt")  # a label that leaves
    for split in ("val", "test"):
        _image(root / "images" / split / f"{split}0.png")
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / f"{split}0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("names: [a]\ntrain: images/train\nval: images/val\ntest: images/test\n")
    return root


def test_links_out_of_a_dataset_are_not_followed_and_nothing_is_copied_from_outside(tmp_path, outside):
    root = _yolo_with_links(tmp_path / "yolo", outside)
    dataset, report = load_dataset(root)
    names = {r.name for r in dataset.images}
    assert names == {"t0", "alias", "deep", "val0", "test0"}  # links inside the dataset are followed, folders too
    leaving = {Path(p.file).name: p.message for p in _problems(report, "link leaves the dataset")}
    assert set(leaving) == {"stolen.png", "passwd.png", "far", "t1.png"}
    assert f"symbolic link to {outside / 'photo.png'}, outside the dataset folder" in leaving["stolen.png"]
    assert "none of its files imported" in leaving["far"] and "its label file" in leaving["t1.png"]
    assert {Path(p).name for p in report.quarantined} == {"stolen.png", "passwd.png", "t1.png"}

    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report)
    assert PoolState.load(project).counts()["labeled"] == 1
    quarantine = project / "quarantine"
    # t1.png lives inside (its label file is what leaves); the two links out were not copied
    assert sorted(p.name for p in quarantine.iterdir()) == ["import_report.txt", "t1.png"]
    assert "hunter2" not in "".join(p.read_text(errors="replace") for p in quarantine.iterdir())
    assert not any(p.is_symlink() for p in project.rglob("*"))


def test_voc_and_coco_links_out_of_the_dataset_are_quarantined(tmp_path, outside):
    voc = tmp_path / "voc"
    _image(voc / "JPEGImages" / "a.jpg")
    (voc / "JPEGImages" / "b.jpg").symlink_to(outside / "photo.png")
    _xml(voc, "a", "a.jpg")
    _xml(voc, "b", "b.jpg")
    dataset, report = load_dataset(voc)
    assert [r.name for r in dataset.images] == ["a"]
    assert [Path(p.file).name for p in _problems(report, "link leaves the dataset")] == ["b.jpg"]  # reported once

    coco = tmp_path / "coco"
    _image(coco / "images" / "x.png")
    (coco / "images" / "y.png").symlink_to(outside / "photo.png")
    (coco / "images" / "z.png").symlink_to(outside / "secret.txt")  # listed by no entry
    (coco / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.png"}, {"id": 2, "file_name": "y.png"}],
        "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    dataset, report = load_dataset(coco)
    assert [r.name for r in dataset.images] == ["x"]
    assert sorted(Path(p.file).name for p in _problems(report, "link leaves the dataset")) == ["y.png", "z.png"]
