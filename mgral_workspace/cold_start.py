"""The first batch of a project that cannot train a detector yet (no labels, or no labeled val/test).

Selection without a trained detector: k-center greedy (core-set) on the embeddings of the
pretrained start when one is configured (`detector.model` a `.pt` file, or `detector.pretrained`:
'builtin' or a path), else uniform random. The batch goes out together
with the val/test images still to be labeled (carved out of the unlabeled images at init), marked
as such; the next cycle trains once enough of it has come back (`cycle_steps.labeling_wait`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mgral_backends import DetectorBackend, get_backend
from mgral_core.detections import Detections
from mgral_core.seeding import rng_for
from mgral_core.strategies.base import PoolView
from mgral_core.strategies.coreset import coreset
from mgral_core.strategies.random_sampling import random_sampling
from mgral_workspace import cycle_steps as steps
from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.batch_export import export_batch
from mgral_workspace.config import DetectorParams, Params
from mgral_workspace.cycle_report import update_cycle_report
from mgral_workspace.pool import PoolState, PoolStateError
from mgral_workspace.project import load_project_info


@dataclass(frozen=True)
class ColdStartBatch:
    """What a cold-start cycle hands out: `ids` selected from the pool by `method`, plus `eval_ids`."""

    cycle: int
    ids: list[str]
    eval_ids: list[str]  # val/test images to label with the batch
    method: str  # "k_center" or "random"
    reason: str  # one line for the log and the cycle report: how and why
    checkpoint: str | None


def start_name(detector: DetectorParams) -> str:
    """How the configuration names the start a first training would use, for messages."""
    if detector.model.endswith(".pt"):
        return f"detector.model {detector.model}"
    pretrained = getattr(detector, "pretrained", None)
    return f"detector.pretrained {pretrained!r}" if pretrained else ""


def select_cold_start(project_dir: str | Path, params: Params, cycle: int, budget: int,
                      backend: DetectorBackend | None = None) -> ColdStartBatch:
    """The cycle's pool batch, chosen without a trained detector, and the val/test images to go with it.

    With a pretrained start (`backend.start_weights`: the user's .pt as `detector.model`, or the yaml
    with `detector.pretrained`), k-center greedy on its embeddings of the pool (labeled images are
    the first centres); without one, uniform random. Saved as the cycle's selection.json (strategy
    `cold_start:<method>`); a re-run returns it. `backend` defaults to `get_backend(params.detector)`.

    Raises:
        DetectorError: the configured start does not exist.
    """
    path = steps.cycle_dir(project_dir, cycle) / "selection.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return ColdStartBatch(cycle, saved["ids"], saved["eval_ids"], saved["method"], saved["reason"],
                              saved["checkpoint"])
    project = Path(project_dir)
    pool = PoolState.load(project)
    candidates, labeled = pool.unlabeled_pool_ids, pool.labeled_pool_ids
    k = min(budget, len(candidates))
    rng = rng_for(params.selection.seed, cycle, "select")
    backend = get_backend(params.detector) if backend is None else backend
    checkpoint = backend.start_weights(steps.cycle_dir(project, cycle) / "cold_start")
    if checkpoint is not None:
        ids_all = [*candidates.tolist(), *labeled.tolist()]
        _, embeddings = backend.predict(checkpoint, [project / f for f in pool.files(ids_all)])  # (U + L, D)
        view = PoolView(candidates, embeddings[:len(candidates)], labeled, embeddings[len(candidates):])
        ids = coreset(view, k, rng)
        method, reason = "k_center", (f"cold start: {len(ids)} images by k-center greedy on the embeddings of the "
                                      f"pretrained detector ({start_name(params.detector)}; no trained detector yet)")
    else:
        view = PoolView(candidates, np.zeros((len(candidates), 0), np.float32), labeled,
                        np.zeros((len(labeled), 0), np.float32))
        ids = random_sampling(view, k, rng)
        method, reason = "random", (f"cold start: {len(ids)} images at random (no trained detector yet, and no "
                                    f"pretrained start: detector.model is {params.detector.model!r} and "
                                    "detector.pretrained is null; with one it selects by k-center greedy on its "
                                    "embeddings)")
    handed_out = set(pool.pending_ids())
    eval_ids = [i for i in pool.eval_to_label_ids().tolist() if i not in handed_out]
    batch = ColdStartBatch(cycle, ids, eval_ids, method, reason, None if checkpoint is None else str(checkpoint))
    write_json_atomic(path, {**asdict(batch), "strategy": f"cold_start:{method}"})
    return batch


def hand_out_cold_start(project_dir: str | Path, batch: ColdStartBatch, gaps: list[str]) -> Path:
    """Export the batch and its val/test images (marked in the export) for annotators, mark them handed
    out, and write the cycle report; returns exports/cycle_NNN."""
    info = load_project_info(project_dir)
    ids = [*batch.ids, *batch.eval_ids]
    if not ids:
        raise PoolStateError(f"{project_dir}: a detector cannot train yet ({'; '.join(gaps)}), and no image is left "
                             "to hand out for labeling")
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    out = export_batch(project_dir, batch.cycle, ids, {i: empty for i in ids}, info.class_names,
                       f"mgral-cycle{batch.cycle}:cold-start")  # no pre-labels: no detector of these classes yet
    PoolState.load(project_dir).mark_selected(ids, batch.cycle).save(project_dir)
    update_cycle_report(project_dir, batch.cycle, cold_start=True, selection=batch.reason,
                        selection_method=f"cold_start:{batch.method}", selected=len(batch.ids),
                        eval_to_label=len(batch.eval_ids), waiting_for=gaps, export=str(out))
    return out
