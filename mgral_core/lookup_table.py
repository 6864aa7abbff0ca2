"""The per-cycle lookup table: records of (batch of images, their embeddings, measured value).

This module holds the records in memory and draws the record batches; it neither trains nor
touches files. Persisting a table (one npz + json per record) is `mgral_workspace.lookup_store`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

RECORD_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class LookupRecord:
    """One finished record.

    Attributes:
        record_id: file-name-safe id, unique within its table (e.g. "record_007").
        batch_ids: (k,) image ids of the batch B, as str.
        embeddings: (k, D) float32, row i the embedding of batch_ids[i] under the cycle's detector.
        value: the measured value of L ∪ B (e.g. the proxy detector's validation mAP); finite.
        extras: JSON-serialisable details (seed, seconds, fallback flag, ...).
    """

    record_id: str
    batch_ids: np.ndarray
    embeddings: np.ndarray
    value: float
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not RECORD_ID.match(self.record_id):
            raise ValueError(f"record_id {self.record_id!r} must match {RECORD_ID.pattern}")
        batch_ids = np.asarray(self.batch_ids).astype(str)
        embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if batch_ids.ndim != 1 or embeddings.ndim != 2 or len(batch_ids) != len(embeddings) or not len(batch_ids):
            raise ValueError(f"record {self.record_id}: need batch_ids (k,) and embeddings (k, D) with k >= 1, got "
                             f"{batch_ids.shape} and {embeddings.shape}")
        if not math.isfinite(float(self.value)):
            raise ValueError(f"record {self.record_id}: value must be finite, got {self.value}")
        object.__setattr__(self, "batch_ids", batch_ids)
        object.__setattr__(self, "embeddings", embeddings)
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "extras", dict(self.extras))

    @property
    def is_fallback(self) -> bool:
        """True for a record added by the reward estimator's fallback (a non-random batch)."""
        return bool(self.extras.get("fallback", False))


class LookupTable:
    """The finished records of one cycle.

    Args:
        records: the records; ids must be unique.
        on_add: called with each record `add` appends, before it is appended (the workspace
            passes a function that writes it to the cycle's table directory); None keeps the
            table in memory only.
    """

    def __init__(self, records: Iterable[LookupRecord] = (),
                 on_add: Callable[[LookupRecord], None] | None = None):
        self.records: list[LookupRecord] = []
        self.on_add = on_add
        for record in records:
            self._check_new(record)
            self.records.append(record)

    def _check_new(self, record: LookupRecord) -> None:
        if any(r.record_id == record.record_id for r in self.records):
            raise ValueError(f"record {record.record_id!r} is already in the table")

    def add(self, record: LookupRecord) -> None:
        """Append a record, handing it to `on_add` (e.g. to persist it) first when there is one."""
        self._check_new(record)
        if self.on_add is not None:
            self.on_add(record)
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[LookupRecord]:
        return iter(self.records)

    @property
    def values(self) -> np.ndarray:
        """(R,) record values in table order."""
        return np.array([r.value for r in self.records], dtype=np.float64)

    def to_frame(self) -> pd.DataFrame:
        """One row per record: record_id, value, batch_size, then one column per extra.

        Scalar extras are kept as they are; lists and dicts are JSON-encoded strings.
        """
        rows = []
        for r in self.records:
            extras = {k: v if v is None or np.isscalar(v) else json.dumps(v, sort_keys=True)
                      for k, v in r.extras.items() if k not in ("record_id", "value", "batch_size")}
            rows.append({"record_id": r.record_id, "value": r.value, "batch_size": len(r.batch_ids), **extras})
        return pd.DataFrame(rows, columns=None if rows else ["record_id", "value", "batch_size"])


def random_batches(candidate_ids: np.ndarray, k: int, n: int, seed: int) -> list[np.ndarray]:
    """n batches of k distinct ids drawn from candidate_ids; batch i depends only on (seed, i)."""
    if k > len(candidate_ids):
        raise ValueError(f"batch size {k} exceeds the {len(candidate_ids)} candidates")
    return [np.random.default_rng([seed, i]).choice(candidate_ids, size=k, replace=False) for i in range(n)]


def mixed_batches(candidate_ids: np.ndarray, embeddings: np.ndarray, k: int, n: int, seed: int,
                  n_clusters: int = 8, concentration: float = 0.7) -> list[np.ndarray]:
    """n batches of k distinct ids whose composition varies: batch i draws cluster weights from a
    Dirichlet(concentration) over k-means clusters of the candidates' embeddings (N, D), then k ids
    with probability proportional to their cluster's weight. Depends only on (seed, i) and the inputs.

    Random batches from one pool all have nearly the same embedding distribution, so the Wasserstein
    distance between them carries little information; mixed batches spread the table over batch
    compositions (docs/method.md). Not random batches: their mean value is not a random batch's.
    """
    if k > len(candidate_ids):
        raise ValueError(f"batch size {k} exceeds the {len(candidate_ids)} candidates")
    if len(embeddings) != len(candidate_ids):
        raise ValueError(f"{len(embeddings)} embeddings for {len(candidate_ids)} candidates")
    from mgral_core.shortlist import kmeans

    _, labels = kmeans(embeddings, min(n_clusters, len(candidate_ids)), seed=seed)  # (N,)
    batches = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 1])
        weights = rng.dirichlet(np.full(labels.max() + 1, concentration))[labels] + 1e-12  # (N,)
        batches.append(rng.choice(candidate_ids, size=k, replace=False, p=weights / weights.sum()))
    return batches


def table_diagnostics(records: list[dict | None], checks: list[dict | None]) -> dict[str, Any]:
    """Signal-to-noise of a cycle's table from its records and their diagnostic re-trainings.

    `records[i]` has the record's "value"; `checks[i]` its "value_other_seeds" and
    "value_true_labels" (None outside simulation); failed entries are None. Returns repeatability
    (Spearman of value vs other seeds), fidelity (Spearman of value vs true labels; None without
    an oracle), between-batch std, seed noise std (std of the seed difference / sqrt 2) and counts.
    A Spearman of a constant column is reported as None.
    """
    from scipy.stats import spearmanr

    pairs = [(r["value"], c["value_other_seeds"], c.get("value_true_labels"))
             for r, c in zip(records, checks) if r is not None and c is not None]
    out: dict[str, Any] = {"records": len(pairs), "repeatability": None, "fidelity": None,
                           "between_batch_std": None, "seed_noise_std": None}
    if len(pairs) < 3:
        return out
    value, other, true = (np.array([p[i] for p in pairs], dtype=object) for i in range(3))
    value, other = value.astype(float), other.astype(float)

    def rank_corr(a: np.ndarray, b: np.ndarray) -> float | None:
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return None
        return float(spearmanr(a, b).statistic)

    out["repeatability"] = rank_corr(value, other)
    if all(t is not None for t in true):
        out["fidelity"] = rank_corr(value, true.astype(float))
    out["between_batch_std"] = float(value.std(ddof=1))
    out["seed_noise_std"] = float((value - other).std(ddof=1) / np.sqrt(2))
    return out
