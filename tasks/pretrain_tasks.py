"""Prefect tasks of `mgral pretrain`: make the pretraining set, train on it (resumable), ship the transfer file."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mgral_backends.ultralytics import pretrained as weights
from mgral_workspace.config import Params
from mgral_workspace.pretrain_data import PretrainSpec, pretrain_dataset
from mgral_workspace.provenance import provenance_record


def _spec(params: Params) -> PretrainSpec:
    p = params.pretrain
    return PretrainSpec(seed=p.seed, image_size=params.detector.imgsz, n_train=p.images, n_val=p.val_images)


@task(name="pretrain-data")
def pretrain_data_task(out_dir: str, params: Params) -> str:
    data, reused = pretrain_dataset(_spec(params), Path(out_dir) / "data")
    get_run_logger().info(f"pretraining set {'reused' if reused else 'generated'}: {data}")
    return str(data)


@task(name="pretrain-detector")
def pretrain_detector_task(data_dir: str, out_dir: str, params: Params) -> dict:
    logger = get_run_logger()
    summary = weights.pretrain_detector(
        data_dir, Path(out_dir) / "train", model_yaml=params.detector.model, epochs=params.pretrain.epochs,
        imgsz=params.detector.imgsz, batch=params.pretrain.batch, seed=params.pretrain.seed,
        cache=params.detector.cache, progress=lambda epoch, total: logger.info(f"pretraining epoch {epoch}/{total}"))
    logger.info(f"pretrained: val mAP50-95 {summary['val_map50_95']:.4f} on the pretraining set ({summary['checkpoint']})")
    return summary


@task(name="export-transfer-weights")
def export_transfer_task(summary: dict, weights_out: str, params: Params, command: str) -> dict:
    header = weights.export_transfer_weights(summary["checkpoint"], weights_out, model_yaml=params.detector.model,
                                             imgsz=params.detector.imgsz)
    record = provenance_record(weights_out, command=command, header=header, spec=_spec(params), training=summary)
    weights.write_provenance(Path(weights_out).with_suffix(".json"), record)
    get_run_logger().info(f"transfer weights {weights_out}: {record['bytes'] / 1e6:.2f} MB, sha256 {record['sha256'][:12]}")
    return record
