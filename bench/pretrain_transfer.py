"""Does the pretrained start transfer? The built-in test split, from scratch vs from `detector.pretrained`.

Trains YOLO on the initial labeled set (100 images) and on the whole pool, from scratch and from the
pretrained start, same detector settings, and prints test mAP50-95 against the targets of the
evidence issue: the 100-label pretrained detector >= 0.15 and >= 2x the scratch figure at no more
training epochs (time is printed too), and the full-pool pretrained detector >= the scratch full-pool
figure. Each cell is written to the results JSON as soon as it is done, and a re-run skips the cells
already there (delete the file, or pass --fresh, to measure again).

Usage: python bench/pretrain_transfer.py [--params params.yaml] [--pretrained builtin|PATH]
           [--epochs 60] [--pretrained-epochs 30] [--full-epochs 20] [--cells scratch/initial,...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from mgral_backends.ultralytics.detector import train_detector, write_data_yaml
from mgral_workspace.config import load_params
from mgral_workspace.cycle_steps import evaluate_split
from mgral_workspace.provenance import cpu_model

from dataset_difficulty import revealed_builtin_project  # bench/ is on sys.path when run as a script

CELLS = ("scratch/initial", "pretrained/initial", "pretrained/full_pool", "scratch/full_pool")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--pretrained", default="builtin", help="detector.pretrained for the pretrained cells")
    parser.add_argument("--epochs", type=int, default=None, help="scratch, initial set (default detector.epochs)")
    parser.add_argument("--pretrained-epochs", type=int, default=None, help="pretrained, initial set "
                        "(default detector.epochs)")
    parser.add_argument("--full-epochs", type=int, default=20, help="full pool, both starts")
    parser.add_argument("--cells", default=",".join(CELLS[:3]), help=f"comma-separated subset of {CELLS}; "
                        "scratch/full_pool defaults to bench/results/dataset_difficulty.json's figure")
    parser.add_argument("--out", default="bench/results/pretrain_transfer.json")
    parser.add_argument("--fresh", action="store_true", help="measure every cell again")
    args = parser.parse_args()
    params = load_params(args.params)
    out = Path(args.out)
    results = {} if args.fresh or not out.exists() else json.loads(out.read_text())
    results.setdefault("machine", {"cpu": cpu_model(), "nproc": os.cpu_count()})
    epochs = {"scratch/initial": args.epochs or params.detector.epochs,
              "pretrained/initial": args.pretrained_epochs or params.detector.epochs,
              "pretrained/full_pool": args.full_epochs, "scratch/full_pool": args.full_epochs}
    todo = [c for c in args.cells.split(",") if c not in results.get("cells", {})]
    unknown = sorted(set(todo) - set(CELLS))
    if unknown:
        parser.error(f"unknown cells {unknown}; choose from {CELLS}")
    with tempfile.TemporaryDirectory() as tmp:
        project, pool, info = revealed_builtin_project(params, Path(tmp) / "project")
        initial = [project / f for f in pool.files(pool.labeled_pool_ids)]
        full = [project / "images" / Path(f).name for f in pool.files(pool.ids("pool"))]
        val = [project / f for f in pool.files(pool.ids("val"))]
        for cell in todo:
            start_kind, train_set = cell.split("/")
            detector = params.detector.model_copy(
                update={"pretrained": args.pretrained if start_kind == "pretrained" else None})
            images = initial if train_set == "initial" else full
            load = os.getloadavg()[0]
            started = time.time()
            data = write_data_yaml(Path(tmp) / cell / "data.yaml", images, val, info.class_names)
            trained = train_detector(data, Path(tmp) / cell, detector, epochs=epochs[cell])
            seconds = time.time() - started
            test = evaluate_split(project, trained.weights, params, "test")
            results.setdefault("cells", {})[cell] = {
                "train_images": len(images), "epochs": epochs[cell], "pretrained": detector.pretrained,
                "test_map50_95": round(test.map50_95, 4), "test_map50": round(test.map50, 4),
                "train_seconds": round(seconds, 1), "load_average_at_start": round(load, 2),
                "per_class_ap50_95": {k: round(v, 4) for k, v in test.per_class.items()}}
            print(f"{cell:22s} {len(images):5d} images {epochs[cell]:3d} epochs  test mAP50-95 {test.map50_95:.4f}"
                  f"  mAP50 {test.map50:.4f}  ({seconds:.0f} s, load {load:.1f})", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp_out = out.with_suffix(".json.tmp")
            tmp_out.write_text(json.dumps(results, indent=2))
            tmp_out.replace(out)
    report(results)


def report(results: dict) -> None:
    cells = results.get("cells", {})
    scratch_full = cells.get("scratch/full_pool", {}).get("test_map50_95")
    source = "measured here"
    reference = Path("bench/results/dataset_difficulty.json")
    if scratch_full is None and reference.exists():
        scratch_full, source = json.loads(reference.read_text())["full_pool"]["test_map50_95"], str(reference)
    m = results["machine"]
    print(f"\nmachine: {m['cpu']}, nproc {m['nproc']}")
    si, pi, pf = (cells.get(c) for c in ("scratch/initial", "pretrained/initial", "pretrained/full_pool"))
    if si and pi:
        a, b = pi["test_map50_95"], si["test_map50_95"]
        print(f"100 labels: pretrained {a:.4f} vs scratch {b:.4f} ({a / max(b, 1e-9):.1f}x); "
              f"target >= 0.15: {'met' if a >= 0.15 else 'NOT met'}; >= 2x: {'met' if a >= 2 * b else 'NOT met'}; "
              f"epochs {pi['epochs']} vs {si['epochs']} ({pi['train_seconds']:.0f} s vs {si['train_seconds']:.0f} s): "
              f"{'no more training' if pi['epochs'] <= si['epochs'] else 'MORE training'}")
    if pf and scratch_full is not None:
        print(f"full pool: pretrained {pf['test_map50_95']:.4f} vs scratch {scratch_full:.4f} ({source}); "
              f"target >= scratch: {'met' if pf['test_map50_95'] >= scratch_full else 'NOT met'}")


if __name__ == "__main__":
    main()
