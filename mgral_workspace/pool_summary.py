"""What `mgral status` shows of the pool, without parsing pool.csv: a summary written beside it by every save.

`PoolState.save` writes `.pool_summary.json` after pool.csv, with a digest of the pool.csv bytes it
summarises. `read_summary` returns it only while pool.csv still has exactly those bytes; a pool.csv
changed any other way (by hand, `dvc checkout` of an earlier version, a crash between the two
writes) gets None, and the caller parses and checks pool.csv as before. This module needs nothing
beyond the standard library, so the command that reads it starts without pandas (bench/pool_scale.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

POOL_FILE = "pool.csv"
SUMMARY_FILE = ".pool_summary.json"
VERSION = 1
COUNTS = ("labeled", "unlabeled", "pending", "val", "test")  # the order `mgral status` shows them in


def pool_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_summary(project_dir: str | Path) -> dict | None:
    """The summary of the project's pool.csv as it is now, or None (no summary, another version, or other bytes)."""
    project = Path(project_dir)
    try:
        summary = json.loads((project / SUMMARY_FILE).read_text())
        data = (project / POOL_FILE).read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("version") != VERSION or summary.get("digest") != pool_digest(data):
        return None
    return summary
