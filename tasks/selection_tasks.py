"""Prefect tasks that pick the next batch (one path for every strategy) and hand it to the oracle."""

from __future__ import annotations

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from mgral_workspace import cycle_steps as steps
from mgral_workspace.cold_start import select_cold_start
from mgral_workspace.config import Params
from mgral_workspace.selection import select_batch


@task(name="select-batch")
def select_batch_task(project_dir: str, params: Params, inference_path: str, cycle: int, strategy: str,
                      budget: int, weights: str) -> tuple[list[str], dict]:
    """The cycle's batch by `strategy` (see `mgral_workspace.selection.select_batch`), and what it left to log."""
    with tqdm(desc=f"{strategy}: select", leave=False) as bar:
        ids, outputs = select_batch(project_dir, params, inference_path, cycle, strategy, budget, weights,
                                    progress=lambda i, v: bar.update(1))
    logger = get_run_logger()
    if len(ids) < budget:
        logger.warning(f"budget {budget} exceeds the {len(ids)} unlabeled images; selecting all of them")
    logger.info(f"cycle {cycle}: {strategy} selected {len(ids)} images"
                          + "".join(f"; {k} {v:.4f}" for k, v in outputs["metrics"].items()
                                    if k in ("agent_final_reward", "lookup_reference_value", "lookup_loo_spearman",
                                             "oracle_chosen_value", "oracle_gap_vs_random")
                                    and v is not None))
    for warning in outputs["warnings"]:
        logger.warning(warning)
    return ids, outputs


@task(name="oracle-annotate")
def oracle_annotate_task(project_dir: str, ids: list[str], cycle: int) -> dict:
    pool = steps.oracle_annotate(project_dir, ids, cycle)
    get_run_logger().info(f"cycle {cycle}: oracle labeled {len(ids)} images; pool now {pool.counts()}")
    return pool.counts()


@task(name="cold-start-select")
def cold_start_select_task(project_dir: str, params: Params, cycle: int, budget: int) -> dict:
    """The first batch without a trained detector (`mgral_workspace.cold_start.select_cold_start`); logs how."""
    batch = select_cold_start(project_dir, params, cycle, budget)
    get_run_logger().info(f"cycle {cycle}: {batch.reason}; with it go {len(batch.eval_ids)} val/test images to label")
    return {"ids": batch.ids, "eval_ids": batch.eval_ids, "method": batch.method, "reason": batch.reason,
            "checkpoint": batch.checkpoint, "cycle": cycle}
