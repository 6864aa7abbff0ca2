"""The measurement chain of MGRAL's reward, one cycle at a time: where does the signal get lost?

(a) record repeatability: Spearman of the table's record values between two proxy seed sets;
(b) fidelity on diverse batches: Spearman of proxy (pseudo-label) values against true-label values over
    batches that differ for real (each baseline's proposal, random batches, mixtures);
(c) value-model quality: leave-one-out Spearman of the estimator over the table's records;
(d) the agent: its final estimated reward against the best record and the random-batch reference;
(e) the outcome: the true-label value of MGRAL's batch against each baseline's, the best table
    record's and the ceiling's (the best diverse batch).
Pure: values in, figures and rows out. The true-label values are a simulation-only diagnostic that
selection never reads; computing them is the workspace's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import spearmanr

TARGETS = {"repeatability": 0.5, "fidelity_diverse": 0.6, "loo_spearman": 0.5}
"""Targets of the Spearman links (a: docs/method.md section 0, b and c: the reward-chain issue)."""


@dataclass(frozen=True)
class ScoredBatch:
    """One batch with its values: `pseudo` = the proxy record MGRAL's table would hold, `true` = the same
    record trained with the oracle's labels of B (None when unknown). kind: see `mgral_core.batch_design`."""

    label: str
    kind: str
    pseudo: float | None
    true: float | None
    other_seeds: float | None = None


def spearman(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Spearman correlation over the pairs where both values are known; None below 3 pairs or if one is constant."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
             and math.isfinite(float(x)) and math.isfinite(float(y))]
    if len(pairs) < 3:
        return None
    x, y = (np.array(v, dtype=float) for v in zip(*pairs))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def _best(batches: Sequence[ScoredBatch], key: str) -> ScoredBatch | None:
    known = [b for b in batches if getattr(b, key) is not None]
    return max(known, key=lambda b: getattr(b, key)) if known else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def chain_figures(records: Sequence[ScoredBatch], diverse: Sequence[ScoredBatch], *, loo_spearman: float | None,
                  agent_final_reward: float | None, random_reference: float | None, mgral: ScoredBatch | None,
                  base_value: float | None = None) -> dict[str, Any]:
    """Every figure of links a to e.

    Args:
        records: the table's records (pseudo = record value, other_seeds, true = true-label diagnostic).
        diverse: the diverse set, distinct batches; proposals carry the baseline's name as label.
        loo_spearman: (c), computed by the estimator over the same records.
        agent_final_reward: the agent's estimated reward at the end of training (mean of its last iterations).
        random_reference: the estimator's random-batch reference value.
        mgral: MGRAL's selected batch with its proxy and true-label values.
        base_value: the proxy value of L alone; gains are values minus it (None: gains are not reported).

    Returns a flat dict: repeatability, fidelity_records, fidelity_diverse, diverse_batches, loo_spearman,
    agent_final_reward, best_record_value, random_reference, agent_minus_reference, agent_minus_best_record,
    mgral_proxy_value, mgral_true, best_record (its label), best_record_true, ceiling (label), ceiling_true,
    random_true_mean, mgral_minus_best_record, mgral_minus_ceiling, mgral_rank (1 = best true value among
    the diverse batches and MGRAL's), true_<baseline> and mgral_minus_<baseline> per proposal, and
    *_gain figures (value - base_value) for mgral, best_record and ceiling.
    """
    best_record = _best(records, "pseudo")
    ceiling = _best(diverse, "true")
    randoms = [b.true for b in diverse if b.kind == "random" and b.true is not None]
    mgral_true = None if mgral is None else mgral.true
    out: dict[str, Any] = {
        "records": len(records),
        "repeatability": spearman([r.pseudo for r in records], [r.other_seeds for r in records]),
        "fidelity_records": spearman([r.pseudo for r in records], [r.true for r in records]),
        "fidelity_diverse": spearman([b.pseudo for b in diverse], [b.true for b in diverse]),
        "diverse_batches": len(diverse),
        "loo_spearman": None if loo_spearman is None or not math.isfinite(loo_spearman) else float(loo_spearman),
        "agent_final_reward": agent_final_reward,
        "best_record_value": None if best_record is None else best_record.pseudo,
        "random_reference": random_reference,
        "agent_minus_reference": _minus(agent_final_reward, random_reference),
        "agent_minus_best_record": _minus(agent_final_reward, None if best_record is None else best_record.pseudo),
        "mgral_proxy_value": None if mgral is None else mgral.pseudo,
        "mgral_true": mgral_true,
        "best_record": None if best_record is None else best_record.label,
        "best_record_true": None if best_record is None else best_record.true,
        "ceiling": None if ceiling is None else ceiling.label,
        "ceiling_true": None if ceiling is None else ceiling.true,
        "random_true_mean": float(np.mean(randoms)) if randoms else None,
    }
    out["mgral_minus_best_record"] = _minus(mgral_true, out["best_record_true"])
    out["mgral_minus_ceiling"] = _minus(mgral_true, out["ceiling_true"])
    out["mgral_minus_random"] = _minus(mgral_true, out["random_true_mean"])
    known = [b.true for b in diverse if b.true is not None]
    out["mgral_rank"] = None if mgral_true is None else 1 + sum(v > mgral_true for v in known)
    for batch in diverse:
        if batch.kind == "proposal":
            out[f"true_{batch.label}"] = batch.true
            out[f"mgral_minus_{batch.label}"] = _minus(mgral_true, batch.true)
    for name in ("mgral_true", "best_record_true", "ceiling_true"):
        out[name.replace("_true", "_true_gain")] = _minus(out[name], base_value)
    out["base_value"] = base_value
    return out


def chain_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-cycle table: one row per headline figure, with its target and whether it is met (None: no target
    or no value). Rows: a repeatability, b fidelity (diverse and records), c LOO, d agent vs best record and
    random reference, e MGRAL's true value against the best record, the best baseline and the ceiling."""
    f = figures
    proposals = {k[len("true_"):]: v for k, v in f.items() if k.startswith("true_") and v is not None}
    best_baseline = max(proposals, key=proposals.get) if proposals else None

    def row(link: str, figure: str, value, target: str = "", met: bool | None = None) -> dict[str, Any]:
        return {"link": link, "figure": figure, "value": value, "target": target, "met": met}

    def at_least(value, threshold):
        return None if value is None else bool(value >= threshold)

    rows = [
        row("a", "record repeatability (Spearman, two seed sets)", f["repeatability"],
            f">= {TARGETS['repeatability']}", at_least(f["repeatability"], TARGETS["repeatability"])),
        row("b", f"fidelity on {f['diverse_batches']} diverse batches (Spearman, pseudo vs true)",
            f["fidelity_diverse"], f">= {TARGETS['fidelity_diverse']}",
            at_least(f["fidelity_diverse"], TARGETS["fidelity_diverse"])),
        row("b", f"fidelity on the {f['records']} table records (Spearman, pseudo vs true)", f["fidelity_records"]),
        row("c", "value model: leave-one-out Spearman over the records", f["loo_spearman"],
            f">= {TARGETS['loo_spearman']}", at_least(f["loo_spearman"], TARGETS["loo_spearman"])),
        row("d", "agent's final estimated reward", f["agent_final_reward"]),
        row("d", f"best record's value ({f['best_record']})", f["best_record_value"]),
        row("d", "random-batch reference", f["random_reference"]),
        row("d", "agent minus random reference", f["agent_minus_reference"]),
        row("e", "MGRAL's batch, true-label value", f["mgral_true"]),
        row("e", f"best table record's batch ({f['best_record']}), true-label value", f["best_record_true"],
            "MGRAL >= it", None if f["mgral_minus_best_record"] is None else f["mgral_minus_best_record"] >= 0),
        row("e", f"best baseline's batch ({best_baseline}), true-label value",
            None if best_baseline is None else proposals[best_baseline]),
        row("e", "random batches, mean true-label value", f["random_true_mean"]),
        row("e", f"ceiling: best diverse batch ({f['ceiling']}), true-label value", f["ceiling_true"]),
        row("e", "MGRAL minus ceiling", f["mgral_minus_ceiling"]),
        row("e", f"MGRAL's rank by true value among the {f['diverse_batches']} diverse batches (1 = best)",
            f["mgral_rank"]),
    ]
    return rows


def chain_metrics(figures: dict[str, Any]) -> dict[str, float]:
    """The figures that are numbers, as MLflow metrics named chain_<figure>, plus chain_targets_met / _checked."""
    out = {f"chain_{k}": float(v) for k, v in figures.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    checked = [r["met"] for r in chain_rows(figures) if r["met"] is not None]
    out["chain_targets_met"], out["chain_targets_checked"] = float(sum(checked)), float(len(checked))
    return out
