"""Lookup-table records: validation, atomic persistence, reuse of finished records, the table frame."""

import json

import numpy as np
import pytest

from mgral_core.lookup_table import (
    LookupRecord,
    LookupTable,
    mixed_batches,
    random_batches,
)
from mgral_workspace.lookup_store import finished_record_ids, load_record, load_table, missing_record_ids, save_record


def record(record_id="record_000", k=3, dim=4, value=0.25, **extras):
    rng = np.random.default_rng(len(record_id) + k)
    return LookupRecord(record_id, np.array([f"img{i}" for i in range(k)]), rng.normal(size=(k, dim)), value, extras)


def test_record_round_trip(tmp_path):
    original = record(seconds=1.5, seed=3, classes=[1, 2])
    save_record(tmp_path, original)
    loaded = load_record(tmp_path, "record_000")
    assert loaded.value == 0.25 and loaded.extras == {"seconds": 1.5, "seed": 3, "classes": [1, 2]}
    assert loaded.batch_ids.tolist() == ["img0", "img1", "img2"]
    assert loaded.embeddings.dtype == np.float32
    np.testing.assert_array_equal(loaded.embeddings, original.embeddings)


def test_partial_and_temporary_files_are_not_records(tmp_path):
    save_record(tmp_path, record("record_000"))
    (tmp_path / "record_001.npz").write_bytes(b"half")  # crashed before its json
    (tmp_path / "record_002.json").write_text(json.dumps({"value": 0.1}))  # npz lost
    (tmp_path / ".record_003.json.abc123.tmp").write_text("{")  # atomic_open's temporary file
    assert finished_record_ids(tmp_path) == ["record_000"]
    assert [r.record_id for r in load_table(tmp_path)] == ["record_000"]
    assert load_record(tmp_path, "record_001") is None


def test_a_failed_write_leaves_the_record_missing(tmp_path):
    with pytest.raises(TypeError):
        save_record(tmp_path, record("record_004", bad=object()))  # extras not JSON-serialisable
    assert missing_record_ids(tmp_path, ["record_004"]) == ["record_004"]
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob(".*"))


def test_rerun_reuses_finished_records(tmp_path):
    wanted = [f"record_{i:03d}" for i in range(4)]
    assert missing_record_ids(tmp_path / "absent", wanted) == wanted
    for i in (0, 2):
        save_record(tmp_path, record(wanted[i], value=i / 10))
    assert missing_record_ids(tmp_path, wanted) == ["record_001", "record_003"]
    np.testing.assert_allclose(load_table(tmp_path).values, [0.0, 0.2])


def test_add_persists_to_the_table_directory_and_rejects_duplicates(tmp_path):
    table = load_table(tmp_path)
    table.add(record("record_000"))
    assert finished_record_ids(tmp_path) == ["record_000"]
    with pytest.raises(ValueError, match="already in the table"):
        table.add(record("record_000"))
    memory_only = LookupTable([record("a")])
    memory_only.add(record("b"))
    assert len(memory_only) == 2 and memory_only.on_add is None


def test_to_frame_has_one_row_per_record_with_extras():
    table = LookupTable([record("r0", k=3, value=0.1, seed=1), record("r1", k=5, value=0.3, seed=2, fallback=True)])
    frame = table.to_frame()
    assert frame["record_id"].tolist() == ["r0", "r1"]
    assert frame["batch_size"].tolist() == [3, 5]
    assert frame["value"].tolist() == [0.1, 0.3] and frame["seed"].tolist() == [1, 2]
    assert list(LookupTable([]).to_frame().columns) == ["record_id", "value", "batch_size"]


@pytest.mark.parametrize("kwargs, message", [
    ({"record_id": "../escape"}, "record_id"),
    ({"record_id": ".hidden"}, "record_id"),
    ({"value": float("nan")}, "finite"),
    ({"embeddings": np.ones((2, 4))}, "batch_ids"),
])
def test_invalid_records_are_rejected(kwargs, message):
    fields = {"record_id": "r0", "batch_ids": np.array(["a", "b", "c"]), "embeddings": np.ones((3, 4)), "value": 0.1}
    with pytest.raises(ValueError, match=message):
        LookupRecord(**{**fields, **kwargs})


def test_random_batches_are_seeded_per_record():
    ids = np.array([f"u{i}" for i in range(50)])
    first, again = random_batches(ids, 10, 3, seed=7), random_batches(ids, 10, 5, seed=7)
    assert all(a.tolist() == b.tolist() for a, b in zip(first, again))  # more records leave earlier ones alone
    assert all(len(set(b.tolist())) == 10 for b in first)
    assert first[0].tolist() != first[1].tolist()
    with pytest.raises(ValueError, match="exceeds"):
        random_batches(ids, 51, 1, seed=0)


def test_mixed_batches_vary_in_composition_and_are_seeded():
    rng = np.random.default_rng(0)
    cluster = rng.integers(0, 4, 400)  # (N,) four well separated groups of candidates
    embeddings = (np.eye(4)[cluster] * 10 + rng.normal(0, 0.1, (400, 4))).astype(np.float32)  # (N, 4)
    ids = np.array([f"img{i:03d}" for i in range(400)])
    batches = mixed_batches(ids, embeddings, 40, 12, seed=5, n_clusters=4)
    again = mixed_batches(ids, embeddings, 40, 12, seed=5, n_clusters=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert all(len(set(b)) == 40 and set(b) <= set(ids) for b in batches)
    share = lambda bs: np.array([(cluster[np.searchsorted(ids, b)] == 0).mean() for b in bs])  # noqa: E731
    random_share = share(random_batches(ids, 40, 12, seed=5))
    assert share(batches).std() > 3 * random_share.std()  # mixed batches differ; random ones are all alike
    with pytest.raises(ValueError, match="exceeds"):
        mixed_batches(ids, embeddings, 401, 1, seed=0)
