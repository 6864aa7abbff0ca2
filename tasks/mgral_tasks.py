"""Prefect tasks of the MGRAL strategy: lookup-table records (mapped) and agent training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task
from tqdm.auto import tqdm

from mgral_core import cycle as steps
from mgral_core.agent import AgentConfig, checkpoint, resolve_threads
from mgral_core.atomic import write_json_atomic
from mgral_core.config import Params
from mgral_core.inference_cache import load_inference
from mgral_core.lookup_table import LookupRecord, LookupTable, load_record, mixed_batches, random_batches, save_record
from mgral_core.plots import plot_agent_training
from mgral_core.pool import PoolState
from mgral_core.project import load_project_info
from mgral_core.record_values import (
    cache_cycle_features,
    diagnostic_seeds,
    record_value,
    true_label_record,
)
from mgral_core.reward import RewardEstimator, leave_one_out_spearman
from mgral_core.shortlist import shortlist_size
from mgral_core.strategies.mgral import train_and_select
from tasks import tracking
from tasks.retry import transient_only


def lookup_dir(project_dir: str, cycle: int) -> Path:
    return steps.cycle_dir(project_dir, cycle) / "lookup_table"


def record_batches(project_dir: str, params: Params, cycle: int, budget: int,
                   inference_path: str | None = None) -> list[list[str]]:
    """The R record batches of this cycle (fixed by seed and cycle, so a re-run gets the same ones).

    Random batches, or with `lookup_table.batch_sampling: mixed` batches of varying cluster mix
    (needs the cycle's pool embeddings, `inference_path`)."""
    candidates = PoolState.load(project_dir).unlabeled_pool_ids
    k, t = min(budget, len(candidates)), params.lookup_table
    seed = t.seed * 1000 + cycle
    if t.batch_sampling == "random":
        return [b.tolist() for b in random_batches(candidates, k, t.records, seed=seed)]
    if inference_path is None:
        raise ValueError("lookup_table.batch_sampling: mixed needs the cycle's pool embeddings")
    embeddings = load_inference(inference_path).subset(list(candidates)).embeddings  # (N, D)
    return [b.tolist() for b in mixed_batches(candidates, embeddings, k, t.records, seed,
                                              t.mix_clusters, t.mix_concentration)]


@task(name="head-features", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def head_features_task(project_dir: str, params: Params, cycle: int, weights: str) -> str | None:
    """Cache the Detect-head inputs of L, the unlabeled pool and val once per cycle (head proxy only)."""
    if params.lookup_table.proxy != "head":
        return None
    n = len(PoolState.load(project_dir).table)
    with tqdm(total=n, desc="head features", unit="img", leave=False) as bar:
        path = cache_cycle_features(project_dir, params, weights, lookup_dir(project_dir, cycle), bar.update)
    get_run_logger().info(f"cycle {cycle}: head features cached in {path}")
    return str(path)


@task(name="lookup-record", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def lookup_record_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                       weights: str, inference_path: str) -> dict:
    table_dir, record_id = lookup_dir(project_dir, cycle), f"record_{record_index:03d}"
    done = load_record(table_dir, record_id)
    if done is not None:
        return {"record_id": record_id, "value": done.value, **done.extras}
    result = record_value(project_dir, params, table_dir, record_id, weights, batch_ids, inference_path)
    inference = load_inference(inference_path)
    value = result.pop("value")
    result["worker"] = _worker_name()
    save_record(table_dir, LookupRecord(record_id, np.asarray(batch_ids), inference.subset(batch_ids).embeddings,
                                        value, result))
    get_run_logger().info(f"{record_id}: proxy val mAP50-95 {value:.4f} ({result['seconds']} s on {result['worker']})")
    return {"record_id": record_id, "value": value, **result}


@task(name="lookup-diagnostic", retries=1, retry_condition_fn=transient_only, retry_delay_seconds=2)
def lookup_diagnostic_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                           weights: str, inference_path: str) -> dict:
    """Signal-to-noise check of one record: its value under other seeds and (simulation) with true labels.

    Written to `<table>/diagnostics/record_NNN.json`; the estimator and the agent never read it.
    """
    table_dir, record_id = lookup_dir(project_dir, cycle), f"record_{record_index:03d}"
    path = table_dir / "diagnostics" / f"{record_id}.json"
    if path.exists():
        return json.loads(path.read_text())
    other = record_value(project_dir, params, table_dir, record_id, weights, batch_ids, inference_path,
                         seeds=diagnostic_seeds(params))
    out = {"record_id": record_id, "value_other_seeds": other["value"], "value_true_labels": None}
    if load_project_info(project_dir).simulate:
        out["value_true_labels"] = true_label_record(project_dir, params, table_dir, weights, batch_ids)["value"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, out)
    return out


def _worker_name() -> str:
    """The Dask worker's address when running on one, else 'local pid N'."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local pid {os.getpid()}"


@task(name="train-agent-and-select")
def train_agent_task(project_dir: str, params: Params, cycle: int, budget: int, weights: str,
                     inference_path: str, run_id: str) -> list[str]:
    logger = get_run_logger()
    view = steps.pool_view(project_dir, Path(inference_path))
    inference, table_dir = load_inference(inference_path), lookup_dir(project_dir, cycle)
    embeddings_of = lambda ids: inference.subset(ids).embeddings  # noqa: E731

    def direct_value(ids: np.ndarray) -> float:
        fallback_id = f"fallback_{len(list(table_dir.glob('work/fallback_*')))}"
        (table_dir / "work" / fallback_id).mkdir(parents=True, exist_ok=True)  # numbers the fallbacks
        return record_value(project_dir, params, table_dir, fallback_id, weights, list(ids), inference_path)["value"]

    r = params.reward
    estimator = RewardEstimator(LookupTable.load(table_dir), embeddings_of, method=r.method,
                                n_neighbors=r.n_neighbors, n_projections=r.n_projections,
                                n_quantiles=r.n_quantiles, seed=cycle,
                                fallback_rule=r.fallback_rule, max_fallbacks=r.max_fallbacks,
                                direct_value=direct_value)
    loo = leave_one_out_spearman(estimator)
    a = params.agent
    config = AgentConfig(iterations=a.iterations, lr=a.lr, baseline_decay=a.baseline_decay, chunks=a.chunks,
                         decoder_hidden=a.decoder_hidden, entropy_weight=a.entropy_weight, seed=a.seed + cycle,
                         threads=resolve_threads(a.threads))
    k = min(budget, len(view.unlabeled_ids))
    with tqdm(total=config.iterations, desc="agent (policy gradient)", leave=False) as bar:
        rows, agent, history = train_and_select(
            view.unlabeled_embeddings, k, lambda idx: estimator(view.unlabeled_ids[idx]), config,
            estimator.reference_value, shortlist=a.shortlist, shortlist_method=a.shortlist_method,
            large_pool=a.large_pool, progress=lambda i, v: bar.update(1))
    chosen = [str(view.unlabeled_ids[i]) for i in rows]
    read = shortlist_size(len(view.unlabeled_ids), a.shortlist)
    _log_agent(project_dir, params, run_id, cycle, agent, agent.config, history, estimator, loo, table_dir, read)
    logger.info(f"cycle {cycle}: agent reward {np.mean(history.rewards[-20:]):.4f} (last 20) vs random-batch "
                f"{estimator.reference_value:.4f}; LOO spearman {loo:.3f}; {estimator.fallbacks} fallbacks")
    return chosen


def _log_agent(project_dir, params, run_id, cycle, agent, config, history, estimator, loo, table_dir,
               candidates_read) -> None:
    out = steps.cycle_dir(project_dir, cycle)
    torch.save(checkpoint(agent, config), out / "agent.pt")
    frame = LookupTable(estimator.records).to_frame()
    frame.to_csv(out / "lookup_table.csv", index=False)
    (out / "agent_history.json").write_text(json.dumps({"rewards": history.rewards, "baselines": history.baselines}))
    png = plot_agent_training(history.rewards, history.baselines, estimator.reference_value, out / "agent_training.png")
    diagnostics_file = table_dir / "diagnostics.json"
    diagnostics = json.loads(diagnostics_file.read_text()) if diagnostics_file.exists() else {}
    snr = {f"lookup_{name}": diagnostics[name] for name in ("repeatability", "fidelity", "seed_noise_std",
                                                            "between_batch_std") if diagnostics.get(name) is not None}
    metrics = {**snr, "lookup_loo_spearman": loo, "lookup_fallbacks": estimator.fallbacks,
               "lookup_far_queries": estimator.far_queries, "lookup_records": len(estimator.records),
               "lookup_value_mean": float(frame["value"].mean()), "lookup_value_std": float(frame["value"].std()),
               "lookup_reference_value": float(estimator.reference_value),
               "agent_final_reward": float(np.mean(history.rewards[-20:])), "agent_candidates_read": candidates_read,
               "agent_chunks": config.chunks}
    write_json_atomic(out / "mgral_summary.json", metrics)  # the same figures, for reports without MLflow
    tracking.log_metrics(project_dir, params, run_id, metrics)
    client = tracking.client_for(project_dir, params)[0]
    for i in range(0, len(history.rewards), max(1, len(history.rewards) // 200)):
        client.log_metric(run_id, "agent_reward", history.rewards[i], step=i)
        client.log_metric(run_id, "agent_baseline", history.baselines[i], step=i)
    for path in (out / "agent.pt", out / "lookup_table.csv", png, *([diagnostics_file] if diagnostics else [])):
        tracking.log_artifact(project_dir, params, run_id, path, "mgral")
