"""The reward's measurement chain for one cycle of a simulation (`mgral_core.reward_chain`, links a to e).

Run once the cycle's batch is chosen and saved, before the oracle's labels are copied into the project
(the head proxy's L must still be the cycle's L). It reads the cycle's lookup table, its per-record
diagnostics and `mgral_summary.json`, scores a diverse set of batches — the oracle ceiling's candidates
under the cycle's selection stream, so each proposal is exactly the batch that baseline would have
selected — and the selected batch with the head proxy, on pseudo-labels and on the oracle's labels,
and writes `cycles/cycle_NNN/reward_chain.{csv,md,json}` and `reward_chain_batches.csv`.
Values are cached per batch in `cycles/cycle_NNN/reward_chain/values/`. A diagnostic only: nothing
in selection reads any of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from mgral_core.batch_design import Candidate, strategy_diverse_batches
from mgral_core.lookup_table import LookupTable
from mgral_core.reward import RewardEstimator, leave_one_out_spearman
from mgral_core.reward_chain import ScoredBatch, chain_figures, chain_metrics, chain_rows
from mgral_core.seeding import rng_for, seed_for
from mgral_core.strategies import BASELINE_STRATEGIES
from mgral_workspace import cycle_steps as steps
from mgral_workspace.atomic import write_json_atomic, write_text_atomic
from mgral_workspace.config import Params
from mgral_workspace.inference_cache import load_inference
from mgral_workspace.lookup_store import load_table
from mgral_workspace.project import load_project_info
from mgral_workspace.record_values import labeled_only_record, record_value, true_label_record
from mgral_workspace.selection import batch_representation


def chain_dir(project_dir: str | Path, cycle: int) -> Path:
    """cycles/cycle_NNN/reward_chain: the cached values of the chain's batches."""
    return steps.cycle_dir(project_dir, cycle) / "reward_chain"


def diverse_batches(project_dir: str | Path, params: Params, cycle: int, budget: int, inference_path: str | Path
                    ) -> list[Candidate]:
    """The distinct candidates the oracle ceiling would score this cycle (`oracle` section of the params):
    every baseline's own batch (the cycle's selection stream), mixtures of them with random images, random
    batches."""
    view = steps.pool_view(project_dir, Path(inference_path))
    settings = params.oracle.to_settings()
    names = settings.proposals if settings.proposals is not None else tuple(BASELINE_STRATEGIES)
    candidates = strategy_diverse_batches(view, min(budget, len(view.unlabeled_ids)),
                                          rng_for(params.selection.seed, cycle, "select"),
                                          {name: BASELINE_STRATEGIES[name] for name in names}, settings.candidates,
                                          settings.mix_share, settings.swap_fraction)
    return [c for c in candidates if c.same_as is None]


class ChainValues:
    """Pseudo-label and true-label head-proxy values of batches, cached per batch in `<chain_dir>/values/`.

    Values the table already holds (a record's value, its diagnostic true-label value) are taken from
    it, so a batch that is also a record is not trained again.
    """

    def __init__(self, project_dir: str | Path, params: Params, cycle: int, weights: str, inference_path: str,
                 known: dict[frozenset, dict[str, float]] | None = None):
        self.project_dir, self.params, self.weights, self.inference_path = project_dir, params, weights, inference_path
        self.table_dir = steps.cycle_dir(project_dir, cycle) / "lookup_table"
        self.values_dir = chain_dir(project_dir, cycle) / "values"
        self.known = known or {}

    def value(self, batch: Sequence[str], which: str) -> float:
        """`which` = 'pseudo' (the record MGRAL's table would hold) or 'true' (the oracle's labels of B)."""
        known = self.known.get(frozenset(map(str, batch)), {}).get(which)
        if known is not None:
            return float(known)
        key = hashlib.sha256("\n".join(sorted(map(str, batch))).encode()).hexdigest()[:20]
        path = self.values_dir / f"{key}_{which}{self._proxy_tag() if which == 'pseudo' else ''}.json"
        if path.exists():
            return float(json.loads(path.read_text())["value"])
        if which == "pseudo":
            result = record_value(self.project_dir, self.params, self.table_dir, f"chain_{key}", self.weights,
                                  list(batch), self.inference_path)
        else:
            result = true_label_record(self.project_dir, self.params, self.table_dir, self.weights, list(batch))
        write_json_atomic(path, {**result, "which": which, "batch_ids": sorted(map(str, batch))})
        return float(result["value"])

    def _proxy_tag(self) -> str:
        """'' for the threshold pseudo-labels, '-sampledN' for N sampled draws: a pseudo value is cached per proxy,
        so a cycle measured again with `lookup_table.pseudo_labels` changed does not read the other proxy's value;
        '-expected_objects' / '-class_gain' for those `lookup_table.value`s."""
        t = self.params.lookup_table
        if t.value != "proxy":
            return f"-{t.value}"
        return "" if t.pseudo_labels == "threshold" else f"-{t.pseudo_labels}{t.pseudo_draws}"

    def base(self) -> float:
        """The record of L alone (cached as values/labeled_only.json)."""
        path = self.values_dir / "labeled_only.json"
        if path.exists():
            return float(json.loads(path.read_text())["value"])
        result = labeled_only_record(self.project_dir, self.params, self.table_dir, self.weights)
        write_json_atomic(path, result)
        return float(result["value"])

    def many(self, requests: Sequence[tuple[Sequence[str], str]], max_workers: int) -> list[float]:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(requests) or 1))) as pool:
            return list(pool.map(lambda request: self.value(*request), requests))


def _table_records(project_dir: str | Path, cycle: int) -> tuple[LookupTable, list[ScoredBatch]]:
    """The table's own records (fallbacks left out) and each one with its diagnostic values, when measured."""
    table_dir = steps.cycle_dir(project_dir, cycle) / "lookup_table"
    table = LookupTable([r for r in load_table(table_dir) if not r.is_fallback])
    scored = []
    for record in table:
        check_file = table_dir / "diagnostics" / f"{record.record_id}.json"
        check = json.loads(check_file.read_text()) if check_file.exists() else {}
        kind = record.extras.get("kind", "random")
        label = f"{record.record_id} ({kind} {record.extras.get('source', '')})".replace(" )", ")")
        scored.append(ScoredBatch(label, kind, record.value, check.get("value_true_labels"),
                                  check.get("value_other_seeds")))
    return table, scored


def reward_chain(project_dir: str | Path, params: Params, cycle: int, budget: int, weights: str,
                 inference_path: str) -> dict:
    """Links a to e of the cycle, written beside it; returns {"metrics", "series", "artifacts"} to log.

    Needs the cycle's lookup table (its diagnostics for links a and e's best record), a saved selection
    and a simulation project (the oracle's labels).

    Raises:
        ValueError: outside simulation, or without a lookup table or a saved selection for the cycle.
    """
    if not load_project_info(project_dir).simulate:
        raise ValueError(f"{project_dir}: the reward chain needs the oracle's labels, which only simulation "
                         "projects have")
    out_dir = steps.cycle_dir(project_dir, cycle)
    selection_file = out_dir / "selection.json"
    if not selection_file.exists():
        raise ValueError(f"{selection_file}: the reward chain measures a selection, and cycle {cycle} has none yet")
    selection = json.loads(selection_file.read_text())
    table, records = _table_records(project_dir, cycle)
    if len(table) == 0:
        raise ValueError(f"{out_dir / 'lookup_table'}: no lookup-table record; the chain measures the table")
    options = {**params.reward.estimator_options(params.lookup_table.value), "fallback_rule": "never", "max_fallbacks": 0}
    if options["estimator"] == "exact":  # the agent read the value itself; link c still measures the table's k-NN
        options["estimator"] = "knn"
    features_of = batch_representation(params, load_inference(inference_path),  # as the selection's estimator
                                       steps.pool_view(project_dir, Path(inference_path)).num_classes)
    estimator = RewardEstimator(table, seed=seed_for(params.selection.seed, cycle, "estimator"),
                                features_of=features_of, **options)
    summary_file = out_dir / "mgral_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}

    known = {frozenset(r.batch_ids.tolist()): {"pseudo": s.pseudo, "true": s.true} for r, s in zip(table, records)}
    values = ChainValues(project_dir, params, cycle, weights, inference_path, known)
    diverse = diverse_batches(project_dir, params, cycle, budget, inference_path)
    selected = [str(i) for i in selection["ids"]]
    batches = [c.ids for c in diverse] + [selected]
    workers = int(os.environ.get("MGRAL_MAX_WORKERS", params.lookup_table.max_workers))
    scored = values.many([(b, which) for b in batches for which in ("pseudo", "true")], workers)
    pairs = list(zip(scored[0::2], scored[1::2]))
    diverse_scored = [ScoredBatch(c.label, c.kind, p, t) for c, (p, t) in zip(diverse, pairs)]
    mgral = ScoredBatch(f"selected ({selection.get('strategy', '?')})", "selected", *pairs[-1])
    base = values.base()

    figures = chain_figures(records, diverse_scored, loo_spearman=leave_one_out_spearman(estimator),
                            agent_final_reward=summary.get("agent_final_reward"),
                            random_reference=float(estimator.reference_value), mgral=mgral, base_value=base)
    figures.update({"cycle": cycle, "strategy": selection.get("strategy"),
                    "batch_sampling": params.lookup_table.batch_sampling})
    rows = pd.DataFrame(chain_rows(figures))
    batch_rows = pd.DataFrame(
        [{"role": role, "label": b.label, "kind": b.kind, "proxy_value": b.pseudo, "true_value": b.true,
          "proxy_value_other_seeds": b.other_seeds,
          "true_gain": None if b.true is None else b.true - base}
         for role, group in (("table", records), ("diverse", diverse_scored), ("selected", [mgral])) for b in group])
    paths = {"csv": out_dir / "reward_chain.csv", "batches": out_dir / "reward_chain_batches.csv",
             "md": out_dir / "reward_chain.md", "json": out_dir / "reward_chain.json"}
    write_text_atomic(paths["csv"], rows.to_csv(index=False))
    write_text_atomic(paths["batches"], batch_rows.to_csv(index=False))
    write_text_atomic(paths["md"], chain_markdown(figures, rows, batch_rows))
    write_json_atomic(paths["json"], figures)
    return {"metrics": chain_metrics(figures), "series": {}, "artifacts": [str(p) for p in paths.values()]}


def chain_markdown(figures: dict, rows: pd.DataFrame, batch_rows: pd.DataFrame) -> str:
    """The cycle's chain as markdown: the figures against their targets, then every scored batch."""
    head = (f"# Reward chain, cycle {figures['cycle']} ({figures['batch_sampling']} table, "
            f"{figures['records']} records; selection by {figures['strategy']})\n\n"
            "True-label values are a simulation-only diagnostic: selection never reads them. Values are head-proxy "
            f"val mAP50-95 of L ∪ B; gains are over L alone ({_shown(figures['base_value'])}).\n\n")
    shown = rows.assign(value=rows["value"].map(_shown), met=rows["met"].map({True: "yes", False: "NO"}).fillna(""))
    return (head + shown.to_markdown(index=False) + "\n\n## Batches\n\n"
            + batch_rows.to_markdown(index=False, floatfmt=".4f") + "\n")


def _shown(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def chain_wanted(params: Params, strategy: str, simulate: bool) -> bool:
    """True when the cycle measures the chain: a strategy with a lookup table, in simulation, with the
    table's diagnostics on (`lookup_table.diagnostics`) and the head proxy."""
    from mgral_core.strategies import needs_lookup_table

    return bool(simulate and needs_lookup_table(strategy) and params.lookup_table.diagnostics
                and params.lookup_table.proxy == "head")
