"""Pool state: stable ids, atomic saves, consistent updates."""

import os

import pandas as pd
import pytest

from mgral_workspace.pool import NOT_YET, PoolState, PoolStateError
from mgral_workspace.pool_summary import read_summary


def _pool():
    rows = [{"image_id": f"img{i}", "file": f"images/img{i}.png", "split": "pool", "width": 64, "height": 64}
            for i in range(6)]
    rows += [{"image_id": "v0", "file": "images/v0.png", "split": "val", "width": 64, "height": 64,
              "labeled": True, "label_file": "labels/v0.txt"}]
    return PoolState.new(rows)


def test_round_trip_and_counts(tmp_path):
    pool = _pool().mark_labeled({"img0": "labels/img0.txt"}, cycle=0)
    pool.save(tmp_path)
    loaded = PoolState.load(tmp_path)
    assert loaded.table.equals(pool.table)
    assert loaded.counts() == {"labeled": 1, "unlabeled": 5, "pending": 0, "val": 1, "test": 0}
    assert list(loaded.unlabeled_pool_ids) == ["img1", "img2", "img3", "img4", "img5"]


def test_a_cycles_batch_and_what_came_before_it():
    pool = _pool().mark_labeled({"img0": "labels/img0.txt"}, cycle=0)
    pool = pool.mark_selected(["img1", "img2"], cycle=1).mark_labeled({"img1": "l1.txt", "img2": "l2.txt"}, cycle=1)
    pool = pool.mark_selected(["img3"], cycle=2)  # handed out, not labeled yet
    assert list(pool.labeled_pool_ids_in(0)) == ["img0"] and list(pool.labeled_pool_ids_in(1)) == ["img1", "img2"]
    assert list(pool.labeled_pool_ids_in(2)) == [] and list(pool.labeled_pool_ids_before(2)) == ["img0", "img1",
                                                                                                  "img2"]


def test_selection_makes_pending_and_refuses_bad_ids():
    pool = _pool().mark_labeled({"img0": "labels/img0.txt"}, cycle=0)
    selected = pool.mark_selected(["img1", "img2"], cycle=1)
    assert list(selected.pending_ids()) == ["img1", "img2"]
    assert "img1" not in selected.unlabeled_pool_ids
    assert selected.current_cycle == 1
    with pytest.raises(PoolStateError, match="unknown"):
        pool.mark_selected(["nope"], 1)
    with pytest.raises(PoolStateError, match="already labeled"):
        pool.mark_selected(["img0"], 1)
    with pytest.raises(PoolStateError, match="already labeled"):
        pool.mark_selected(["v0"], 1)
    with pytest.raises(PoolStateError, match="duplicate"):
        pool.mark_selected(["img3", "img3"], 1)


def test_labeling_records_cycle():
    pool = _pool().mark_labeled({"img4": "labels/img4.txt"}, cycle=2)
    row = pool.table.set_index("image_id").loc["img4"]
    assert bool(row["labeled"]) and row["labeled_cycle"] == 2 and row["selected_cycle"] == 2
    assert pool.table.set_index("image_id").loc["img5", "labeled_cycle"] == NOT_YET


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    pool = _pool()
    pool.save(tmp_path)
    before = (tmp_path / "pool.csv").read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        pool.mark_labeled({"img1": "labels/img1.txt"}, 1).save(tmp_path)
    assert (tmp_path / "pool.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pool_summary.json", "pool.csv"]  # no temp file left
    assert read_summary(tmp_path)["counts"] == pool.counts()  # and the summary still the old pool's


def test_load_rejects_duplicate_ids_naming_the_file(tmp_path):
    _pool().save(tmp_path)
    text = (tmp_path / "pool.csv").read_text().splitlines()
    (tmp_path / "pool.csv").write_text("\n".join(text + [text[1]]) + "\n")
    with pytest.raises(PoolStateError, match="pool.csv.*duplicate image ids"):
        PoolState.load(tmp_path)


@pytest.mark.parametrize("column, bad", [("labeled", "maybe"), ("labeled", ""), ("selected_cycle", "2.5"),
                                         ("width", "wide")])
def test_load_parses_strictly_naming_line_and_column(tmp_path, column, bad):
    """A damaged cell is refused with its line and column; 'maybe' is never read as labeled."""
    _pool().save(tmp_path)
    frame = pd.read_csv(tmp_path / "pool.csv", dtype=str, keep_default_na=False)
    frame.loc[2, column] = bad
    frame.to_csv(tmp_path / "pool.csv", index=False)
    with pytest.raises(PoolStateError, match=f"pool.csv: line 4, column '{column}': '{bad}' is not"):
        PoolState.load(tmp_path)


def test_load_of_an_empty_or_binary_pool_table_names_the_file(tmp_path):
    (tmp_path / "pool.csv").write_text("")
    with pytest.raises(PoolStateError, match="pool.csv: not a readable pool table"):
        PoolState.load(tmp_path)
    (tmp_path / "pool.csv").write_bytes(b"\xff\xfe\x00\x01binary\x00")
    with pytest.raises(PoolStateError, match="pool.csv"):
        PoolState.load(tmp_path)


def test_val_test_images_to_label_go_out_with_a_batch_and_count_once_labeled():
    """A cold start's val/test images are carved out of the unlabeled ones: handed out, pending, then labeled."""
    pool = PoolState.new([*(_pool().table.to_dict("records")),
                          {"image_id": "t0", "file": "images/t0.png", "split": "test", "width": 64, "height": 64}])
    assert list(pool.eval_to_label_ids()) == ["t0"] and list(pool.eval_ids("test")) == []
    out = pool.mark_selected(["img1", "t0"], 1)
    assert list(out.pending_ids()) == ["img1", "t0"] and out.counts()["pending"] == 2
    done = out.mark_labeled({"t0": "labels/t0.txt"}, 1)
    assert list(done.eval_ids("test")) == ["t0"] and list(done.eval_to_label_ids()) == []
    assert list(done.pending_ids()) == ["img1"] and list(done.eval_ids("val")) == ["v0"]
