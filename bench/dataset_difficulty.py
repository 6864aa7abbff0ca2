"""Does the built-in dataset leave room for active learning? Train on the initial set and on the full pool.

Prints test mAP50-95 / mAP50 of a YOLO trained (same settings, from its yaml) on the initial
labeled set and on the whole pool. Usage: python bench/dataset_difficulty.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import evaluate_split
from mgral_backends.ultralytics.detector import train_detector, write_data_yaml
from mgral_workspace.pool import PoolState
from mgral_workspace.project import init_from_synthetic, load_project_info
from mgral_workspace.synthetic import SyntheticSpec


def revealed_builtin_project(params, project: Path):
    """The built-in simulation project with every pool label revealed (the full-pool upper bound; bench only).

    Returns (project, pool state, project info); the initially labeled ids stay `pool.labeled_pool_ids`.
    """
    d = params.dataset
    init_from_synthetic(project, SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool,
                                               n_val=d.n_val, n_test=d.n_test),
                        params.simulation.initial_labeled, params.simulation.seed)
    pool, info = PoolState.load(project), load_project_info(project)
    for image_id in pool.ids("pool"):
        src = info.oracle_dir / f"{image_id}.txt"
        if src.exists():
            (info.labels_dir / f"{image_id}.txt").write_text(src.read_text())
    return project, pool, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="initial set; default: detector.epochs")
    parser.add_argument("--full-epochs", type=int, default=20, help="full pool (20x more images per epoch)")
    parser.add_argument("--out", default="bench/results/dataset_difficulty.json")
    args = parser.parse_args()
    params = load_params(args.params)
    epochs = args.epochs or params.detector.epochs
    with tempfile.TemporaryDirectory() as tmp:
        project, pool, info = revealed_builtin_project(params, Path(tmp) / "project")
        all_pool = [project / "images" / Path(f).name for f in pool.files(pool.ids("pool"))]
        results = {}
        for name, train, n_epochs in (("initial", [project / f for f in pool.files(pool.labeled_pool_ids)], epochs),
                                      ("full_pool", all_pool, args.full_epochs)):
            start = time.time()
            data = write_data_yaml(Path(tmp) / name / "data.yaml", train,
                                   [project / f for f in pool.files(pool.ids("val"))], info.class_names)
            trained = train_detector(data, Path(tmp) / name, params.detector, epochs=n_epochs)
            test = evaluate_split(project, trained.weights, params, "test")
            results[name] = {"train_images": len(train), "epochs": n_epochs, "test_map50_95": round(test.map50_95, 4),
                             "test_map50": round(test.map50, 4), "seconds": round(time.time() - start, 1),
                             "per_class_ap50_95": {k: round(v, 4) for k, v in test.per_class.items()}}
            print(f"{name:10s} {len(train):5d} images  test mAP50-95 {test.map50_95:.4f}  mAP50 {test.map50:.4f}"
                  f"  ({time.time() - start:.0f} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
