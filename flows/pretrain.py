"""`mgral-pretrain`: the pretrained start, made here (docs/method.md, "A pretrained start made here")."""

from __future__ import annotations

from prefect import flow

from mgral_workspace.config import Params, load_params
from tasks.pretrain_tasks import export_transfer_task, pretrain_data_task, pretrain_detector_task


@flow(name="mgral-pretrain", log_prints=True)
def mgral_pretrain(out_dir: str, weights_out: str, params_file: str | None = None, command: str = "") -> dict:
    """Generate the disjoint pretraining set, train the detector on it (resumable), write the transfer file.

    Re-running with the same arguments resumes an interrupted training from its last epoch and
    reuses the generated set; the transfer file and its provenance (`weights_out` with .json) are
    written at the end.
    """
    params = load_params(params_file) if params_file else Params()
    data = pretrain_data_task(out_dir, params)
    summary = pretrain_detector_task(data, out_dir, params)
    return export_transfer_task(summary, weights_out, params, command)
