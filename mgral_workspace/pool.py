"""Pool state: one row per image, keyed by a stable id, stored as `pool.csv` in the project.

The table records each image's split, whether it is labeled, the cycle in which it was
selected and labeled, where its visible label file lives, and the image's original name (its path
in the dataset it came from, to match annotation exports by). It never holds labels itself.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mgral_workspace.atomic import atomic_open, write_json_atomic
from mgral_workspace.pool_summary import POOL_FILE, SUMMARY_FILE, VERSION, pool_digest

SPLITS = ("pool", "val", "test")
COLUMNS = {
    "image_id": str,
    "file": str,
    "split": str,
    "labeled": bool,
    "selected_cycle": int,
    "labeled_cycle": int,
    "label_file": str,
    "width": int,
    "height": int,
    "original_name": str,  # path relative to the source dataset; "" = not known (projects made before it existed)
}
OPTIONAL = {"original_name": ""}  # columns an older pool.csv may lack, and what a missing one means
NOT_YET = -1
_BOOLS = {"True": True, "False": False}


def _parse_strictly(table: pd.DataFrame) -> pd.DataFrame:
    """pool.csv as read (every cell a string) -> typed columns; a cell that is not of its column's type
    is an error naming its row (the file's line) and column, never coerced (`'maybe'` is not True)."""
    missing = [c for c in COLUMNS if c not in table.columns and c not in OPTIONAL]
    if missing:
        raise PoolStateError(f"pool table lacks columns {missing}")
    out = table.assign(**{c: v for c, v in OPTIONAL.items() if c not in table.columns})[list(COLUMNS)].copy()
    for column, kind in COLUMNS.items():
        if kind is str:
            continue
        values = out[column].str.strip()
        if kind is bool:
            bad = ~values.isin(list(_BOOLS))
            parsed = values.map(_BOOLS)
        else:
            bad = ~values.str.fullmatch(r"-?\d+")
            parsed = values.where(~bad, "0").astype(np.int64)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            expected = "True or False" if kind is bool else "an integer"
            raise PoolStateError(f"line {row + 2}, column {column!r}: {table[column].iloc[row]!r} is not {expected} "
                                 f"({int(bad.sum())} such cells in the column)")
        out[column] = parsed.astype(kind)
    return out


class PoolStateError(ValueError):
    """The pool table is malformed or an update would make it inconsistent."""


class _ParsedTables:
    """The last few pool tables this process read or wrote, keyed by the file and a digest of its bytes.

    A cycle reads pool.csv in every step (each step stands alone, so a cycle resumes anywhere); at
    100,000 images parsing and checking it costs about a second, hashing its bytes about 10 ms. A
    table is reused only for the very bytes it was parsed from, so any change on disk, by this
    process or another, is read afresh; a table written by `save` is parsed when next read, as in
    any other process. Callers get a copy.
    """

    def __init__(self, size: int = 4):
        self.size, self.tables, self.guard = size, OrderedDict(), threading.Lock()

    @staticmethod
    def digest(data: bytes) -> str:
        return pool_digest(data)

    def get(self, path: Path, digest: bytes) -> pd.DataFrame | None:
        with self.guard:
            found = self.tables.get(str(path.absolute()))
            if found is None or found[0] != digest:
                return None
            self.tables.move_to_end(str(path.absolute()))
            return found[1].copy()

    def put(self, path: Path, digest: bytes, table: pd.DataFrame) -> None:
        with self.guard:
            self.tables[str(path.absolute())] = (digest, table.copy())
            self.tables.move_to_end(str(path.absolute()))
            while len(self.tables) > self.size:
                self.tables.popitem(last=False)


_PARSED = _ParsedTables()


@dataclass
class PoolState:
    """The pool table (a pandas DataFrame indexed by nothing, one row per image)."""

    table: pd.DataFrame

    def __post_init__(self) -> None:
        self.table = self.table.assign(**{c: v for c, v in OPTIONAL.items() if c not in self.table.columns})
        missing = [c for c in COLUMNS if c not in self.table.columns]
        if missing:
            raise PoolStateError(f"pool table lacks columns {missing}")
        self.table = self.table[list(COLUMNS)].astype(COLUMNS).reset_index(drop=True)
        dup = self.table["image_id"][self.table["image_id"].duplicated()]
        if len(dup):
            raise PoolStateError(f"duplicate image ids in pool table: {sorted(dup)[:5]}")
        bad_split = set(self.table["split"].unique()) - set(SPLITS)
        if bad_split:
            raise PoolStateError(f"unknown split values {sorted(bad_split)}; allowed {SPLITS}")

    @classmethod
    def new(cls, rows: list[dict]) -> "PoolState":
        defaults = {"labeled": False, "selected_cycle": NOT_YET, "labeled_cycle": NOT_YET, "label_file": "",
                    **OPTIONAL}
        return cls(pd.DataFrame([{**defaults, **row} for row in rows], columns=list(COLUMNS)))

    @classmethod
    def load(cls, project_dir: str | Path) -> "PoolState":
        """The project's pool.csv, every cell checked; the same bytes read before in this process are not
        parsed again (`_ParsedTables`)."""
        path = Path(project_dir) / POOL_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: no pool table; run `mgral init` first")
        try:
            data = path.read_bytes()
            digest = _PARSED.digest(data)
            known = _PARSED.get(path, digest)
            if known is not None:
                return cls._checked(known)
            table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
            raise PoolStateError(f"{path}: not a readable pool table ({type(err).__name__}: {str(err)[:200]}); "
                                 "restore it from the pool's history (git checkout pool.csv && dvc checkout)") from None
        try:
            state = cls(_parse_strictly(table))
        except (PoolStateError, ValueError) as err:
            raise PoolStateError(f"{path}: {err}") from err
        _PARSED.put(path, digest, state.table)
        return state

    @classmethod
    def _checked(cls, table: pd.DataFrame) -> "PoolState":
        """A state of a table that has passed `__post_init__` before (not checked again)."""
        state = cls.__new__(cls)
        state.table = table
        return state

    def save(self, project_dir: str | Path) -> Path:
        """Write the table atomically (temp file + fsync + rename), then its summary for `mgral status`
        (mgral_workspace.pool_summary: used only while pool.csv has exactly these bytes)."""
        path = Path(project_dir) / POOL_FILE
        data = self.table.to_csv(index=False).encode()
        with atomic_open(path, "wb") as handle:
            handle.write(data)
        write_json_atomic(Path(project_dir) / SUMMARY_FILE, {"version": VERSION, "digest": pool_digest(data),
                                                              **self.summary()})
        return path

    def summary(self) -> dict:
        """What `mgral status` shows of the pool (mgral_workspace.pool_summary)."""
        batch_cycle, done, total = self.open_batch()
        return {"cycle": self.current_cycle, "counts": self.counts(), "eval_to_label": len(self.eval_to_label_ids()),
                "open_batch": {"cycle": batch_cycle, "labeled": done, "total": total},
                "training_gaps": self.training_gaps()}

    def ids(self, split: str, labeled: bool | None = None) -> np.ndarray:
        rows = self.table["split"] == split
        if labeled is not None:
            rows &= self.table["labeled"] == labeled
        return self.table.loc[rows, "image_id"].to_numpy(dtype=str)

    @property
    def labeled_pool_ids(self) -> np.ndarray:
        return self.ids("pool", labeled=True)

    def labeled_pool_ids_before(self, cycle: int) -> np.ndarray:
        """Pool images labeled before `cycle` began (the initial set is cycle 0): what cycle `cycle` trained on."""
        t = self.table
        rows = (t["split"] == "pool") & t["labeled"] & (t["labeled_cycle"] != NOT_YET) & (t["labeled_cycle"] < cycle)
        return t.loc[rows, "image_id"].to_numpy(dtype=str)

    def labeled_pool_ids_in(self, cycle: int) -> np.ndarray:
        """Pool images labeled in `cycle`: that cycle's batch (cycle 0 = the initial labeled set)."""
        t = self.table
        return t.loc[(t["split"] == "pool") & (t["labeled_cycle"] == cycle), "image_id"].to_numpy(dtype=str)

    @property
    def unlabeled_pool_ids(self) -> np.ndarray:
        """Pool images with no label that are not waiting in an open batch."""
        t = self.table
        rows = (t["split"] == "pool") & ~t["labeled"] & (t["selected_cycle"] == NOT_YET)
        return t.loc[rows, "image_id"].to_numpy(dtype=str)

    def pending_ids(self) -> np.ndarray:
        """Handed out for labeling but not labeled yet: selected pool images, and val/test images carved
        out of the unlabeled ones that went out with a batch."""
        t = self.table
        rows = ~t["labeled"] & (t["selected_cycle"] != NOT_YET)
        return t.loc[rows, "image_id"].to_numpy(dtype=str)

    def eval_ids(self, split: str) -> np.ndarray:
        """The labeled images of `split` ('val' or 'test'): the ones a detector is validated or tested on.

        A val/test image carved out of the unlabeled images counts once it is labeled."""
        return self.ids(split, labeled=True)

    def eval_to_label_ids(self) -> np.ndarray:
        """Val/test images still to be labeled (carved out of the unlabeled images), handed out or not."""
        t = self.table
        rows = t["split"].isin(["val", "test"]) & ~t["labeled"]
        return t.loc[rows, "image_id"].to_numpy(dtype=str)

    def files(self, ids) -> list[str]:
        """The image file (relative to the project) of each of `ids`; KeyError for an id not in the table."""
        lookup = dict(zip(self.table["image_id"].to_numpy(dtype=object), self.table["file"].to_numpy(dtype=object)))
        return [lookup[i] for i in ids]

    @property
    def current_cycle(self) -> int:
        """The last cycle that selected or labeled anything (0 = the initial labeled set)."""
        return int(max(self.table["selected_cycle"].max(), self.table["labeled_cycle"].max(), 0))

    def mark_selected(self, ids, cycle: int) -> "PoolState":
        """Return a new state in which `ids` are selected (handed out) in `cycle`; refuses labeled or
        foreign ids. Unlabeled val/test images are accepted: they go out with a batch to be labeled."""
        ids = list(ids)
        t = self.table.copy()
        rows = t["image_id"].isin(ids)
        found = set(t.loc[rows, "image_id"])
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise PoolStateError(f"cannot select unknown image ids {unknown[:5]}")
        bad = t.loc[rows & t["labeled"], "image_id"].tolist()  # val/test images to label may go out too
        if bad:
            raise PoolStateError(f"cannot select images that are already labeled: {bad[:5]}")
        if len(set(ids)) != len(ids):
            raise PoolStateError("selection contains duplicate ids")
        t.loc[rows, "selected_cycle"] = cycle
        return PoolState(t)

    def mark_labeled(self, label_files: dict[str, str], cycle: int) -> "PoolState":
        """Return a new state where each id in `label_files` is labeled with that label file."""
        t = self.table.copy()
        rows = t["image_id"].isin(list(label_files))
        found = set(t.loc[rows, "image_id"])
        unknown = [i for i in label_files if i not in found]
        if unknown:
            raise PoolStateError(f"cannot label unknown image ids {unknown[:5]}")
        t.loc[rows, "labeled"] = True
        t.loc[rows, "labeled_cycle"] = cycle
        t.loc[rows, "label_file"] = t.loc[rows, "image_id"].map(label_files)
        t.loc[rows & (t["selected_cycle"] == NOT_YET), "selected_cycle"] = cycle
        return PoolState(t)

    def open_batch(self) -> tuple[int, int, int]:
        """(cycle, labeled, handed out) of the most recent batch, val/test images that went out with it
        included; (0, 0, 0) when none is open."""
        t = self.table
        selected = t[t["selected_cycle"] > 0]
        if selected.empty:
            return 0, 0, 0
        cycle = int(selected["selected_cycle"].max())
        batch = selected[selected["selected_cycle"] == cycle]
        return cycle, int(batch["labeled"].sum()), len(batch)

    def training_gaps(self) -> list[str]:
        """What is missing before a detector can be trained, validated and tested; empty when nothing is."""
        gaps = []
        if len(self.labeled_pool_ids) == 0:
            gaps.append("no labeled pool image to train on")
        for split in ("val", "test"):
            total, labeled = len(self.ids(split)), len(self.eval_ids(split))
            if labeled == 0:
                gaps.append(f"no labeled {split} image ({total} to label)" if total else f"no {split} image")
        return gaps

    def counts(self) -> dict[str, int]:
        t = self.table
        pool = t["split"] == "pool"
        return {
            "labeled": int((pool & t["labeled"]).sum()),
            "unlabeled": len(self.unlabeled_pool_ids),
            "pending": len(self.pending_ids()),
            "val": int((t["split"] == "val").sum()),
            "test": int((t["split"] == "test").sum()),
        }
