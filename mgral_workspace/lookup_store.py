"""A lookup table on disk: one `<record_id>.npz` (batch ids, embeddings) and one `<record_id>.json`
(value, extras) per record in the cycle's table directory.

Both files are written atomically the moment a record is finished, the json last, so a crashed or
re-run cycle loads the finished records and trains only the missing ones.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mgral_core.lookup_table import RECORD_ID, LookupRecord, LookupTable
from mgral_workspace.atomic import atomic_open, write_json_atomic


def save_record(table_dir: str | Path, record: LookupRecord) -> Path:
    """Write the record atomically (npz, then the json that marks it finished); returns the json path."""
    table_dir = Path(table_dir)
    buffer = io.BytesIO()
    np.savez(buffer, batch_ids=record.batch_ids, embeddings=record.embeddings)
    with atomic_open(table_dir / f"{record.record_id}.npz", "wb") as handle:
        handle.write(buffer.getvalue())
    meta = table_dir / f"{record.record_id}.json"
    write_json_atomic(meta, {"record_id": record.record_id, "value": record.value,
                             "batch_size": len(record.batch_ids), "extras": record.extras})
    return meta


def load_record(table_dir: str | Path, record_id: str) -> LookupRecord | None:
    """The finished record `record_id`, or None when it is missing or only partly written."""
    table_dir = Path(table_dir)
    meta, arrays = table_dir / f"{record_id}.json", table_dir / f"{record_id}.npz"
    if not (meta.is_file() and arrays.is_file()):
        return None
    info = json.loads(meta.read_text())
    with np.load(arrays, allow_pickle=False) as data:
        return LookupRecord(record_id, data["batch_ids"], data["embeddings"], float(info["value"]),
                            info.get("extras", {}))


def finished_record_ids(table_dir: str | Path) -> list[str]:
    """Sorted ids of the records whose json and npz both exist (temporary files are ignored)."""
    table_dir = Path(table_dir)
    if not table_dir.is_dir():
        return []
    return sorted(p.stem for p in table_dir.glob("*.json")
                  if RECORD_ID.match(p.stem) and (table_dir / f"{p.stem}.npz").is_file())


def missing_record_ids(table_dir: str | Path, wanted_ids: Iterable[str]) -> list[str]:
    """The ids in `wanted_ids` (order kept) that have no finished record in `table_dir` yet."""
    done = set(finished_record_ids(table_dir))
    return [i for i in wanted_ids if i not in done]



def load_table(table_dir: str | Path) -> LookupTable:
    """Every finished record in `table_dir`, sorted by id; records added later are written there too."""
    table_dir = Path(table_dir)
    ids = finished_record_ids(table_dir)
    return LookupTable([r for r in (load_record(table_dir, i) for i in ids) if r is not None],
                       on_add=lambda record: save_record(table_dir, record))
