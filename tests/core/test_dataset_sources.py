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


# a folder of unlabeled images beside the labeled set ----------------------------------------------

def _labeled_voc(root: Path) -> Path:
    for i, color in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200), (90, 90, 10), (10, 90, 90)]):
        _image(root / "JPEGImages" / f"l{i}.jpg", color=color)
        _xml(root, f"l{i}", f"l{i}.jpg")
    return root


def test_unlabeled_folder_joins_the_labeled_set_once_per_image_by_content(tmp_path):
    """Every suffix in any case, in subfolders; a copy of a labeled image is imported once, labeled."""
    from mgral_formats import add_unlabeled_folder

    voc = _labeled_voc(tmp_path / "labeled")
    folder = tmp_path / "unlabeled"
    for i, suffix in enumerate([".png", ".JPG", ".jpeg", ".webp", ".tif", ".BMP"]):
        _image(folder / ("deep/er" if i % 2 else "") / f"u{i}{suffix}", color=(i * 30, 50, 60))
    (folder / "same_as_l0.jpg").write_bytes((voc / "JPEGImages" / "l0.jpg").read_bytes())  # labeled elsewhere
    (folder / "copy_of_u0.png").write_bytes((folder / "u0.png").read_bytes())
    _image(folder / "l1.png", color=(1, 1, 1))  # a name the labeled set uses, other content
    (folder / "notes.txt").write_text("not an image suffix: not looked at")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")

    dataset, report = load_dataset(voc)
    add_unlabeled_folder(dataset, report, folder)
    records = _records(dataset)
    # the first in path order of two identical files is kept
    assert {n for n, r in records.items() if not r.labeled} == {"copy_of_u0", "deep/er/u1", "u2", "deep/er/u3", "u4",
                                                                "deep/er/u5", "unlabeled/l1"}
    assert records["l0"].labeled and records["l1"].labeled  # the labeled images are untouched
    text = report.to_text()
    assert text.startswith("imported 12 images (5 labeled: 5 with objects, 0 empty; 7 unlabeled); 1 quarantined")
    assert "broken.png: [unreadable image]" in text
    assert f"1 images of {folder} are the same files (by content) as labeled images of the dataset; each " \
           f"imported once, labeled: {folder / 'same_as_l0.jpg'} = {voc / 'JPEGImages' / 'l0.jpg'}" in text
    assert f"{folder / 'u0.png'} = {folder / 'copy_of_u0.png'}" in text

    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report)
    ids = set(PoolState.load(project).table["image_id"])
    assert {"deep_er_u1", "unlabeled_l1", "l1"} <= ids and len(ids) == 12


def test_unlabeled_folder_that_is_missing_empty_or_a_file_is_named(tmp_path):
    from mgral_formats import load_unlabeled_folder
    from mgral_formats.image_folder import ImageFolderError

    (tmp_path / "empty").mkdir()
    (tmp_path / "file.png").write_bytes(b"x")
    for folder, message in [(tmp_path / "nowhere", "folder of unlabeled images not found"),
                            (tmp_path / "empty", "no image file found"),
                            (tmp_path / "file.png", "takes a folder of images, not a file")]:
        with pytest.raises(ImageFolderError, match=message):
            load_unlabeled_folder(folder, ["a"])
    _image(tmp_path / "ok" / "a.png")
    with pytest.raises(ValueError, match="class names must be unique"):
        load_unlabeled_folder(tmp_path / "ok", ["a", "a"])


def test_zero_labels_give_a_project_with_val_and_test_to_label(tmp_path):
    from mgral_formats import load_unlabeled_folder

    for i in range(40):
        _image(tmp_path / "photos" / f"p{i:02d}.png", color=(i * 5, 10, 10))
    dataset, report = load_unlabeled_folder(tmp_path / "photos", ["tree"])
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report,
                           min_eval_images=5)
    pool = PoolState.load(project)
    assert pool.counts() == {"labeled": 0, "unlabeled": 27, "pending": 0, "val": 5, "test": 8}
    assert len(pool.eval_to_label_ids()) == 13 and len(pool.eval_ids("val")) == 0
    assert any("carved 5 val, 8 test out of the 40 unlabeled images, to be labeled with the first batch" in n
               for n in report.notes)
    from mgral_workspace.cycle_steps import training_gaps

    assert training_gaps(pool) == ["no labeled pool image to train on", "no labeled val image (5 to label)",
                                   "no labeled test image (8 to label)"]


def test_few_labels_with_eval_from_unlabeled_keep_every_label_for_training(tmp_path):
    root = tmp_path / "voc"
    for i in range(30):
        _image(root / "JPEGImages" / f"t{i:02d}.jpg", color=(i * 7, 40, 40))
        if i < 6:
            _xml(root, f"t{i:02d}", f"t{i:02d}.jpg")
    dataset, report = load_dataset(root)
    project = init_project(tmp_path / "p", dataset, simulate=False, initial_labeled=0, report=report,
                           min_eval_images=3, eval_from_unlabeled=True)
    pool = PoolState.load(project)
    assert pool.counts() == {"labeled": 6, "unlabeled": 15, "pending": 0, "val": 3, "test": 6}
    assert set(pool.eval_to_label_ids()) == set(pool.ids("val")) | set(pool.ids("test"))
    assert any(n.startswith("annotation.eval_from_unlabeled (--eval-in-first-batch): carved 3 val, 6 test")
               for n in report.notes)
