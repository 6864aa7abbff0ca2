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
from mgral_core.agent import AgentConfig, checkpoint, select_top_k, train_agent
from mgral_core.config import Params
from mgral_core.inference_cache import load_inference
from mgral_core.lookup_table import LookupRecord, LookupTable, load_record, random_batches, save_record
from mgral_core.plots import plot_agent_training
from mgral_core.pool import PoolState
from mgral_core.proxy_training import train_proxy_record_isolated
from mgral_core.reward import RewardEstimator, leave_one_out_spearman
from tasks import tracking


def lookup_dir(project_dir: str, cycle: int) -> Path:
    return steps.cycle_dir(project_dir, cycle) / "lookup_table"


def record_batches(project_dir: str, params: Params, cycle: int, budget: int) -> list[list[str]]:
    """The R random batches of this cycle (fixed by seed and cycle, so a re-run gets the same ones)."""
    candidates = PoolState.load(project_dir).unlabeled_pool_ids
    k = min(budget, len(candidates))
    return [b.tolist() for b in random_batches(candidates, k, params.lookup_table.records,
                                               seed=params.lookup_table.seed * 1000 + cycle)]


@task(name="lookup-record", retries=1, retry_delay_seconds=2)
def lookup_record_task(project_dir: str, params: Params, cycle: int, record_index: int, batch_ids: list[str],
                       weights: str, inference_path: str) -> dict:
    table_dir, record_id = lookup_dir(project_dir, cycle), f"record_{record_index:03d}"
    done = load_record(table_dir, record_id)
    if done is not None:
        return {"record_id": record_id, "value": done.value, **done.extras}
    result = train_proxy_record_isolated(project_dir, params, table_dir / "work" / record_id, Path(weights),
                                         batch_ids, Path(inference_path))
    inference = load_inference(inference_path)
    value = result.pop("value")
    result["worker"] = _worker_name()
    save_record(table_dir, LookupRecord(record_id, np.asarray(batch_ids), inference.subset(batch_ids).embeddings,
                                        value, result))
    get_run_logger().info(f"{record_id}: proxy val mAP50-95 {value:.4f} ({result['seconds']} s on {result['worker']})")
    return {"record_id": record_id, "value": value, **result}


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
        fallback_dir = table_dir / "work" / f"fallback_{len(list(table_dir.glob('work/fallback_*')))}"
        return train_proxy_record_isolated(project_dir, params, fallback_dir, Path(weights), list(ids),
                                           Path(inference_path))["value"]

    r = params.reward
    estimator = RewardEstimator(LookupTable.load(table_dir), embeddings_of, method=r.method,
                                n_neighbors=r.n_neighbors, n_projections=r.n_projections,
                                n_quantiles=r.n_quantiles, seed=cycle,
                                fallback_rule=r.fallback_rule, max_fallbacks=r.max_fallbacks,
                                direct_value=direct_value)
    loo = leave_one_out_spearman(estimator)
    a = params.agent
    config = AgentConfig(iterations=a.iterations, lr=a.lr, baseline_decay=a.baseline_decay, chunks=a.chunks,
                         decoder_hidden=a.decoder_hidden, entropy_weight=a.entropy_weight, seed=a.seed + cycle)
    k = min(budget, len(view.unlabeled_ids))
    with tqdm(total=config.iterations, desc="agent (policy gradient)", leave=False) as bar:
        agent, history = train_agent(view.unlabeled_embeddings, k,
                                     lambda idx: estimator(view.unlabeled_ids[idx]), config,
                                     estimator.reference_value, progress=lambda i, v: bar.update(1))
    chosen = [str(view.unlabeled_ids[i]) for i in select_top_k(agent, view.unlabeled_embeddings, k, config.chunks)]
    _log_agent(project_dir, params, run_id, cycle, agent, config, history, estimator, loo, table_dir)
    logger.info(f"cycle {cycle}: agent reward {np.mean(history.rewards[-20:]):.4f} (last 20) vs random-batch "
                f"{estimator.reference_value:.4f}; LOO spearman {loo:.3f}; {estimator.fallbacks} fallbacks")
    return chosen


def _log_agent(project_dir, params, run_id, cycle, agent, config, history, estimator, loo, table_dir) -> None:
    out = steps.cycle_dir(project_dir, cycle)
    torch.save(checkpoint(agent, config), out / "agent.pt")
    frame = LookupTable(estimator.records).to_frame()
    frame.to_csv(out / "lookup_table.csv", index=False)
    (out / "agent_history.json").write_text(json.dumps({"rewards": history.rewards, "baselines": history.baselines}))
    png = plot_agent_training(history.rewards, history.baselines, estimator.reference_value, out / "agent_training.png")
    tracking.log_metrics(project_dir, params, run_id, {
        "lookup_loo_spearman": loo, "lookup_fallbacks": estimator.fallbacks,
        "lookup_far_queries": estimator.far_queries,
        "lookup_records": len(estimator.records), "lookup_value_mean": float(frame["value"].mean()),
        "lookup_value_std": float(frame["value"].std()), "agent_final_reward": float(np.mean(history.rewards[-20:])),
    })
    client = tracking.client_for(project_dir, params)[0]
    for i in range(0, len(history.rewards), max(1, len(history.rewards) // 200)):
        client.log_metric(run_id, "agent_reward", history.rewards[i], step=i)
        client.log_metric(run_id, "agent_baseline", history.baselines[i], step=i)
    for path in (out / "agent.pt", out / "lookup_table.csv", png):
        tracking.log_artifact(project_dir, params, run_id, path, "mgral")
