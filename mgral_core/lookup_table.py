"""The per-cycle lookup table: records of (random batch, its embeddings, proxy mAP), one file each.

Each record is written atomically the moment it is finished, so a crashed cycle re-run loads
finished records and trains only the missing ones.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mgral_core.atomic import atomic_open, write_json_atomic


@dataclass(frozen=True)
class LookupRecord:
    """batch_ids (k,), embeddings (k, D) under the cycle's detector, value = proxy mAP of L ∪ B."""

    record_id: str
    batch_ids: np.ndarray
    embeddings: np.ndarray
    value: float
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.batch_ids) != len(self.embeddings):
            raise ValueError(f"record {self.record_id}: {len(self.batch_ids)} ids but {len(self.embeddings)} embeddings")


def save_record(table_dir: str | Path, record: LookupRecord) -> Path:
    table_dir = Path(table_dir)
    buffer = io.BytesIO()
    np.savez(buffer, batch_ids=record.batch_ids.astype(str), embeddings=record.embeddings.astype(np.float32))
    with atomic_open(table_dir / f"{record.record_id}.npz", "wb") as handle:
        handle.write(buffer.getvalue())
    write_json_atomic(table_dir / f"{record.record_id}.json",
                      {"record_id": record.record_id, "value": record.value, "extras": record.extras})
    return table_dir / f"{record.record_id}.json"


def load_record(table_dir: str | Path, record_id: str) -> LookupRecord | None:
    """The finished record, or None when it is missing or only half written."""
    table_dir = Path(table_dir)
    meta, arrays = table_dir / f"{record_id}.json", table_dir / f"{record_id}.npz"
    if not (meta.exists() and arrays.exists()):
        return None
    info = json.loads(meta.read_text())
    with np.load(arrays, allow_pickle=False) as data:
        return LookupRecord(record_id, data["batch_ids"].astype(str), data["embeddings"], float(info["value"]),
                            info.get("extras", {}))


class LookupTable:
    """All finished records of one cycle."""

    def __init__(self, records: list[LookupRecord]):
        self.records = list(records)

    @classmethod
    def load(cls, table_dir: str | Path) -> "LookupTable":
        table_dir = Path(table_dir)
        ids = sorted(p.stem for p in table_dir.glob("*.json") if not p.name.startswith("."))
        return cls([r for r in (load_record(table_dir, i) for i in ids) if r is not None])

    @property
    def values(self) -> np.ndarray:
        return np.array([r.value for r in self.records])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"record_id": r.record_id, "value": r.value, "batch_size": len(r.batch_ids),
                              **{k: v for k, v in r.extras.items() if np.isscalar(v)}} for r in self.records])


def random_batches(candidate_ids: np.ndarray, k: int, n: int, seed: int) -> list[np.ndarray]:
    """n random batches of k distinct candidate ids (record i's batch depends on (seed, i) only)."""
    if k > len(candidate_ids):
        raise ValueError(f"batch size {k} exceeds the {len(candidate_ids)} candidates")
    return [np.random.default_rng([seed, i]).choice(candidate_ids, size=k, replace=False) for i in range(n)]
