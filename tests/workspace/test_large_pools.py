"""What the work on pools of 100,000 images changed (bench/pool_scale.py) keeps its behaviour: the pool table's
parse cache, bulk label writes, the import's name index, link checks that remember folders, partial pool-pass
loads, the export; and the spots that were quadratic in the pool size stay linear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest

from mgral_core.detections import Detections
from mgral_formats.common import link_target_outside
from mgral_workspace import cycle_steps
from mgral_workspace.annotation_import import _name_and_stem
from mgral_workspace.atomic import write_texts_atomic
from mgral_workspace.batch_export import export_batch
from mgral_workspace.inference_cache import InferenceResult, load_inference, save_inference
from mgral_workspace.pool import NOT_YET, PoolState, PoolStateError
from mgral_workspace.project import _OriginalNames

REPO = Path(__file__).resolve().parents[2]


def _big_pool(n: int, *, labeled: int = 0, eval_to_label: int = 0, pending: int = 0) -> PoolState:
    """n pool images (the first `labeled` labeled, the next `pending` handed out in cycle 1), then
    `eval_to_label` unlabeled val images handed out with the batch, and 2 labeled val and test images."""
    rows = [{"image_id": f"p{i:06d}", "file": f"images/p{i:06d}.png", "split": "pool", "width": 32, "height": 32,
             "labeled": i < labeled, "label_file": f"labels/p{i:06d}.txt" if i < labeled else "",
             "selected_cycle": 0 if i < labeled else 1 if i < labeled + pending else NOT_YET,
             "labeled_cycle": 0 if i < labeled else NOT_YET} for i in range(n)]
    rows += [{"image_id": f"v{i:06d}", "file": f"images/v{i:06d}.png", "split": "val", "width": 32, "height": 32,
              "selected_cycle": 1} for i in range(eval_to_label)]
    rows += [{"image_id": f"{s}{i}", "file": f"images/{s}{i}.png", "split": split, "width": 32, "height": 32,
              "labeled": True, "label_file": f"labels/{s}{i}.txt"} for split, s in (("val", "lv"), ("test", "lt"))
             for i in range(2)]
    return PoolState.new(rows)


def test_a_pool_read_twice_is_the_same_and_any_change_on_disk_is_read_afresh(tmp_path):
    pool = _big_pool(50, labeled=5)
    pool.save(tmp_path)
    first = PoolState.load(tmp_path)
    first.table.loc[0, "width"] = 999  # a caller changing its copy changes nothing for the next reader
    again = PoolState.load(tmp_path)
    assert again.table.equals(pool.table) and int(again.table.loc[0, "width"]) == 32
    path = tmp_path / "pool.csv"
    text = path.read_text()
    with open(path, "r+") as handle:  # in place: same size, same inode, mtime possibly unchanged
        handle.write(text.replace(",32,32,", ",33,32,", 1))
    assert int(PoolState.load(tmp_path).table.loc[0, "width"]) == 33
    path.write_text(text.replace("True", "Yes!", 1))
    with pytest.raises(PoolStateError, match="'labeled'.*not True or False"):
        PoolState.load(tmp_path)


def _mark_labeled_one_by_one(pool: PoolState, label_files: dict[str, str], cycle: int) -> pd.DataFrame:
    """The loop mark_labeled replaced, as the reference."""
    t = pool.table.copy()
    index = {image_id: i for i, image_id in enumerate(t["image_id"])}
    for image_id, label_file in label_files.items():
        i = index[image_id]
        t.at[i, "labeled"], t.at[i, "labeled_cycle"], t.at[i, "label_file"] = True, cycle, label_file
        if t.at[i, "selected_cycle"] == NOT_YET:
            t.at[i, "selected_cycle"] = cycle
    return PoolState(t).table


def test_mark_labeled_and_files_answer_as_before():
    pool = _big_pool(40, labeled=4, pending=10)
    rng = np.random.default_rng(0)
    ids = [str(i) for i in rng.choice(pool.ids("pool")[4:], 15, replace=False)]  # some handed out, some not
    label_files = {i: f"labels/{i}.txt" for i in ids}
    assert pool.mark_labeled(label_files, 2).table.equals(_mark_labeled_one_by_one(pool, label_files, 2))
    with pytest.raises(PoolStateError, match=r"unknown image ids \['nope'\]"):
        pool.mark_labeled({ids[0]: "labels/x.txt", "nope": "labels/nope.txt"}, 2)
    assert pool.files(["p000007", "lv1", "p000002"]) == ["images/p000007.png", "images/lv1.png", "images/p000002.png"]
    with pytest.raises(KeyError):
        pool.files(["p000001", "missing"])


def test_waiting_for_labels_builds_the_set_of_handed_out_images_once(tmp_path, monkeypatch):
    """labeling_wait built the set of handed-out ids once per val/test image to label (20,000 x 20,000 at a
    100k pool: minutes)."""
    _big_pool(3_000, labeled=100, pending=2_000, eval_to_label=1_500).save(tmp_path)
    sets = []
    monkeypatch.setattr(cycle_steps, "set", lambda *a: sets.append(1) or set(*a), raising=False)
    message = cycle_steps.labeling_wait(tmp_path, 0.9)
    assert len(sets) <= 3  # 1,500 before
    assert "batch 1: 0/3500 labeled" in message and "1500 val/test images still to label" in message


def test_the_oracle_reads_the_unlabeled_ids_once_not_once_per_image(tiny_project, monkeypatch):
    reads = []
    unlabeled = PoolState.unlabeled_pool_ids.fget
    monkeypatch.setattr(PoolState, "unlabeled_pool_ids", property(lambda self: reads.append(1) or unlabeled(self)))
    ids = unlabeled(PoolState.load(tiny_project))[:8].tolist()
    pool = cycle_steps.oracle_annotate(tiny_project, ids, 1)
    assert len(reads) <= 2  # once here; a set built per image read it 8 times
    assert set(ids) <= set(pool.labeled_pool_ids) and all((tiny_project / "labels" / f"{i}.txt").exists() for i in ids)


@pytest.mark.parametrize("path", ["images/a.png", "a.png", "sub/dir/a.b.jpg", ".hidden", "a.", "x/.png", "a//b.png",
                                  "./a.png", "a/./b.png", "a/b/", "a/.", "/abs/x.tif", "/", ".", "", "a/..", "noext"])
def test_names_and_stems_are_those_of_posix_paths(path):
    assert _name_and_stem(path) == (PurePosixPath(path).name, PurePosixPath(path).stem)


def test_many_files_are_written_atomically_and_keep_their_modes(tmp_path):
    old = tmp_path / "labels" / "old.txt"
    old.parent.mkdir()
    old.write_text("before\n")
    os.chmod(old, 0o640)
    write_texts_atomic({old: "after\n", tmp_path / "labels" / "new.txt": "new\n", tmp_path / "deep" / "x.txt": ""})
    assert old.read_text() == "after\n" and (old.stat().st_mode & 0o777) == 0o640
    assert (tmp_path / "labels" / "new.txt").read_text() == "new\n" and (tmp_path / "deep" / "x.txt").exists()
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(OSError):
        write_texts_atomic({old: "never\n", tmp_path / "blocker" / "y.txt": "never\n"})
    assert old.read_text() == "after\n"  # nothing replaced when one file cannot be written
    assert not [p for p in tmp_path.rglob("*.tmp")]  # and no temporary file left


def test_link_checks_that_remember_folders_answer_as_each_check_alone(tmp_path):
    root, outside = tmp_path / "ds", tmp_path / "elsewhere"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "images" / "plain.png").write_bytes(b"x")
    (root / "images" / "link_out.png").symlink_to(outside / "secret.png")
    (root / "images" / "link_in.png").symlink_to(root / "images" / "plain.png")
    (root / "linked_folder").symlink_to(outside)
    (root / "alias").symlink_to(root / "images")
    paths = [root / "images" / n for n in ("plain.png", "link_out.png", "link_in.png", "missing.txt")]
    paths += [root / "linked_folder" / "secret.png", root / "linked_folder" / "none.txt", root / "alias" / "plain.png",
              tmp_path / "not_in_root.png"]
    folders: dict[str, str] = {}
    answers = [link_target_outside(p, root, folders) for p in paths]
    assert answers == [link_target_outside(p, root) for p in paths]
    assert answers[1] == str(outside / "secret.png") and answers[4] == str(outside / "secret.png")
    assert answers[0] is None and answers[2] is None and answers[6] is None


def test_original_names_are_relative_to_the_dataset_also_through_links(tmp_path):
    (tmp_path / "real" / "train").mkdir(parents=True)
    (tmp_path / "via").symlink_to(tmp_path / "real")
    names = _OriginalNames(tmp_path / "via")
    assert names(tmp_path / "via" / "train" / "a.png") == "train/a.png"  # as given
    assert names(tmp_path / "real" / "train" / "b.png") == "train/b.png"  # a reader that resolved its paths
    assert names(tmp_path / "other" / "c.png") == "c.png"
    assert _OriginalNames(None)(tmp_path / "via" / "d.png") == "d.png"


def _inference(tmp_path: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(1)
    detections = []
    for i in range(n):
        k = i % 3
        detections.append(Detections(rng.uniform(0, 10, (k, 4)).astype(np.float32), rng.uniform(0, 1, k).astype(
            np.float32), rng.integers(0, 2, k), rng.uniform(0, 1, (k, 2)).astype(np.float32)))
    ids = np.array([f"i{i}" for i in range(n)])
    return save_inference(tmp_path / "inference.npz", InferenceResult(ids, rng.normal(size=(n, 4)).astype(
        np.float32), detections))


def test_loading_some_rows_of_a_pool_pass_equals_taking_them_from_all(tmp_path):
    path = _inference(tmp_path)
    ids = ["i7", "i0", "i29", "i13"]
    some, everything = load_inference(path, ids), load_inference(path).subset(ids)
    assert some.ids.tolist() == ids and np.array_equal(some.embeddings, everything.embeddings)
    for a, b in zip(some.detections, everything.detections):
        assert np.array_equal(a.boxes_xyxy, b.boxes_xyxy) and np.array_equal(a.class_probs, b.class_probs)
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.classes, b.classes)
    assert len(load_inference(path, []).ids) == 0
    with pytest.raises(KeyError, match="'i99'"):
        load_inference(path, ["i1", "i99"])


def test_an_inference_is_hashed_once_and_by_its_content(tmp_path, monkeypatch):
    path = _inference(tmp_path)
    first, again = load_inference(path), load_inference(path)
    assert first.digest == again.digest  # the same content read twice
    assert first.subset(["i1", "i0"]).digest != first.subset(["i0", "i1"]).digest  # row order counts
    changed = InferenceResult(first.ids, first.embeddings + np.float32(1e-3), first.detections)
    assert changed.digest != first.digest
    calls = []
    real = np.ascontiguousarray
    monkeypatch.setattr(np, "ascontiguousarray", lambda a: calls.append(1) or real(a))
    fresh = load_inference(path)
    for _ in range(3):
        assert fresh.digest == first.digest
    assert len(calls) == 1  # one pass over the embeddings, however many records ask


def test_the_export_names_each_image_by_its_file_size_and_split(tiny_project):
    pool = PoolState.load(tiny_project)
    table = pool.table.set_index("image_id")
    ids = pool.unlabeled_pool_ids[:3].tolist() + pool.eval_ids("val")[:1].tolist()
    box = Detections(np.array([[1, 2, 20, 30], [5, 5, 9, 9]], np.float32), np.array([0.9, 0.1], np.float32),
                     np.array([1, 0]))
    out = export_batch(tiny_project, 1, ids, {i: box for i in ids}, ["a", "b"], "m", prelabel_conf=0.5)
    project = tiny_project.resolve()
    assert (out / "images.txt").read_text().splitlines() == [str(project / table.loc[i, "file"]) for i in ids]
    assert (out / "splits.csv").read_text().splitlines()[1:] == [f"{i},{table.loc[i, 'split']}" for i in ids]
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    assert [t["data"]["mgral_id"] for t in tasks] == ids
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d={table.loc[i, 'file']}" for i in ids]
    first = tasks[0]["predictions"][0]["result"]
    assert len(first) == 1 and first[0]["original_width"] == int(table.loc[ids[0], "width"])
    assert "1 of them are validation and 0 test images" in (out / "README.txt").read_text()
    assert sorted(p.stem for p in (out / "yolo_prelabels").iterdir()) == sorted(ids)


def _imported(code: str) -> list[str]:
    heavy = ("torch", "scipy", "ot", "prefect", "mlflow", "cv2", "mgral_formats")
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n"
                           f"print(sorted(m for m in {heavy!r} if m in sys.modules))"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_status_imports_no_detector_format_or_image_library(tiny_project):
    """`mgral status` took 10 s of CPU importing torch, SciPy and POT to check a strategy name in params.yaml."""
    assert _imported(f"from pathlib import Path\nfrom mgral_cli.main import status\nstatus(Path({str(tiny_project)!r}))") \
        == []
    assert _imported("import mgral_workspace.cycle_steps\nfrom mgral_workspace.config import load_params\n"
                     "load_params('params.yaml')") == ["cv2", "mgral_formats"]


def test_the_strategy_name_table_is_the_registry():
    from mgral_core import strategies
    from mgral_workspace import config

    assert config.MODEL_STRATEGY_NAMES == tuple(strategies.MODEL_STRATEGIES)
    assert config.BASELINE_STRATEGY_NAMES == tuple(strategies.BASELINE_STRATEGIES)
    assert config.STRATEGY_NAMES == strategies.STRATEGY_NAMES


def test_boxes_are_counted_from_the_offsets_as_from_the_detections(tmp_path):
    from mgral_workspace.inference_cache import count_boxes

    path = _inference(tmp_path)
    assert count_boxes(path) == (30, sum(len(d) for d in load_inference(path).detections)) == (30, 30)


def _png_with(path: Path, how: str) -> Path:
    """A 40x20 RGB PNG turned by EXIF Orientation 6 as `how` says: an eXIf chunk, a legacy 'Raw profile type
    exif' text, XMP in an iTXt chunk (compressed), or not at all ('plain')."""
    from PIL import Image, PngImagePlugin

    image, info, exif = Image.new("RGB", (40, 20), (10, 200, 30)), PngImagePlugin.PngInfo(), Image.Exif()
    exif[0x0112] = 6
    if how == "raw text":
        raw = exif.tobytes()
        info.add_text("Raw profile type exif", f"\nexif\n{len(raw)}\n{raw.hex()}")
    elif how == "xmp":
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>', zip=True)
    image.save(path, pnginfo=info, **({"exif": exif} if how == "eXIf chunk" else {}))
    return path


@pytest.mark.parametrize("how", ["eXIf chunk", "raw text", "xmp", "plain"])
def test_a_png_is_copied_as_is_only_when_no_chunk_can_turn_it(tmp_path, how):
    from PIL import Image

    from mgral_workspace.project import _copy_image

    source = _png_with(tmp_path / "in.png", how)
    stored = _copy_image(source, tmp_path / "out")
    with Image.open(stored) as image:
        assert image.size == ((40, 20) if how == "plain" else (20, 40))
    assert (stored.read_bytes() == source.read_bytes()) == (how == "plain")
