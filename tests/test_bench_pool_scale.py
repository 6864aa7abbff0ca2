"""bench/pool_scale.py's own pieces, cheaply (a whole run takes minutes: it runs git and DVC): the generated
dataset is what `mgral init` reads, with the labeled / unlabeled split the bench reports, and is made once."""

from __future__ import annotations

import json

from mgral_formats import load_dataset
from tests.conftest import load_bench_script



def _bench():
    return load_bench_script("pool_scale")


def test_the_generated_pool_is_read_as_labeled_and_unlabeled_images_and_cached(tmp_path):
    bench = _bench()
    sizes = bench.split_sizes(4_000)
    assert sizes == {"train": (3_960, 39), "val": (20, 20), "test": (20, 20)}
    assert sum(n for n, _ in bench.split_sizes(100_000).values()) == 100_000
    small = {"train": (40, 30), "val": (20, 20), "test": (20, 20)}
    assert bench.split_sizes(80) == small
    folder, seconds = bench.cached_dataset(tmp_path, 80, 32, 0)
    assert seconds is not None
    dataset, report = load_dataset(folder)
    by_split = {split: [r for r in dataset.images if (r.split or "pool") == split] for split in ("pool", "val", "test")}
    assert [len(by_split[s]) for s in ("pool", "val", "test")] == [40, 20, 20]
    assert sum(r.labeled for r in by_split["pool"]) == 30 and all(r.labeled for r in by_split["val"])
    assert not report.problems and all(r.width == r.height == 32 for r in dataset.images)
    assert all(len(r.classes) >= 1 for r in dataset.images if r.labeled)
    stamp = json.loads((folder / ".complete.json").read_text())
    assert stamp["images"] == 80 and bench.cached_dataset(tmp_path, 80, 32, 0) == (folder, None)
