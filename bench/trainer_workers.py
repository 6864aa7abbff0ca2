"""Detector training on the CPU: Ultralytics' stock trainer against DataLoader workers and torch threads (issue 14, §6).

Ultralytics' BaseTrainer sets `workers = 0` on the CPU, so augmentation runs in the training
process between compute steps. `mgral_backends.ultralytics.trainer.WorkersOnCpuTrainer` keeps the
requested workers (params.yaml `detector.workers_on_cpu`). Its `select_device` also sets torch to
cores - 1 threads (1 on a 2-core machine); `detector.threads: 0` holds one thread per core through
the training instead. This bench trains the same YOLOv8n (from its yaml, params.yaml detector
settings: batch, cache, optimizer) on the same built-in images in each chosen variant (`VARIANTS`),
alternating them `--repeats` times in one run, each training in a fresh child process. Per training
it prints:

* img/s: training images seen / time inside the epochs' batch loops (trainer callbacks
  on_train_epoch_start .. on_train_epoch_end; set-up and the final validation excluded);
* cores busy: CPU time (user + system) of the child and its DataLoader workers
  (`resource.getrusage(RUSAGE_CHILDREN)`) / the child's wall time, set-up and validation included.

The load average before and after is recorded (other processes may share the cores).

  python bench/trainer_workers.py                        # 100 images at 160 px, 3 epochs, 2 repeats
  python bench/trainer_workers.py --images 60 --epochs 1 --repeats 1
  python bench/trainer_workers.py --variants stock,workers_on_cpu,threads_all,threads_all_workers --out torch_threads
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale_common import figure, machine, write_result

# each variant's detector settings over params.yaml's (threads None = Ultralytics' cores - 1; 0 = one per core)
VARIANTS = {"stock": {"workers_on_cpu": False, "threads": None},
            "workers_on_cpu": {"workers_on_cpu": True, "threads": None},
            "threads_all": {"workers_on_cpu": False, "threads": 0},
            "threads_all_workers": {"workers_on_cpu": True, "threads": 0}}


def child(args: argparse.Namespace) -> None:
    """Train once with the variant's trainer; print {epoch_seconds, workers_used, ...} as the last line."""
    from mgral_backends.ultralytics.detector import train_detector
    from mgral_workspace.config import load_params

    import torch
    from ultralytics.utils.callbacks import base  # after mgral's offline settings

    epochs: list[float] = []
    loader: dict = {}

    def start(trainer) -> None:
        epochs.append(-time.perf_counter())

    def end(trainer) -> None:
        epochs[-1] += time.perf_counter()
        loader["workers"] = trainer.train_loader.num_workers
        loader["images"] = len(trainer.train_loader.dataset)
        loader["threads"] = torch.get_num_threads()

    base.default_callbacks["on_train_epoch_start"].append(start)
    base.default_callbacks["on_train_epoch_end"].append(end)
    params = load_params(args.params).detector
    params = params.model_copy(update={**VARIANTS[args.child], "imgsz": args.imgsz})
    trained = train_detector(Path(args.data), Path(args.out), params, epochs=args.epochs)
    print(json.dumps({"epoch_seconds": epochs, "workers_used": loader["workers"], "images": loader["images"],
                      "torch_threads": loader["threads"],
                      "val_map50_95": trained.val_map50_95}))


def train_once(variant: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", variant, "--data", str(data), "--out", str(out),
                           "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--params", args.params],
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} training failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loop = sum(result["epoch_seconds"])
    return {**result, "variant": variant, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "cores_busy": round(cpu / wall, 3), "loop_seconds": round(loop, 2),
            "images_per_second": round(result["images"] * args.epochs / loop, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--imgsz", type=int, default=160, help="image size of the generated data and the detector")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="trainings per variant, alternated")
    parser.add_argument("--out", default="trainer_workers")
    parser.add_argument("--variants", default="stock,workers_on_cpu",
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    variants = args.variants.split(",")
    if unknown := sorted(set(variants) - set(VARIANTS)):
        parser.error(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")

    from mgral_backends.ultralytics.detector import write_data_yaml
    from mgral_workspace.synthetic import DEFAULT_CLASSES, SyntheticSpec, generate_dataset

    info = machine()
    print(f"{info['date']}  {info['cpu']}  {info['nproc']} cores  load {info['loadavg']}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(SyntheticSpec(seed=0, image_size=args.imgsz, n_pool=args.images, n_val=50, n_test=1),
                                Path(tmp) / "data")
        data = write_data_yaml(Path(tmp) / "train" / "data.yaml", sorted((root / "images" / "train").glob("*.png")),
                               sorted((root / "images" / "val").glob("*.png")), DEFAULT_CLASSES)
        for repeat in range(args.repeats):
            for variant in variants if repeat % 2 == 0 else reversed(variants):
                run = train_once(variant, data, Path(tmp) / f"{variant}_{repeat}", args)
                runs.append(run)
                print(f"  {variant:19s} workers {run['workers_used']}  threads {run['torch_threads']}  "
                      f"{run['images_per_second']:7.1f} img/s  "
                      f"cores busy {run['cores_busy']:.2f}  wall {run['wall_seconds']:.1f} s  "
                      f"(epochs {', '.join(f'{s:.1f}' for s in run['epoch_seconds'])} s)", flush=True)
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(f"load after {load_after}")
    medians = {v: statistics.median(r["images_per_second"] for r in runs if r["variant"] == v) for v in variants}
    busy = {v: statistics.median(r["cores_busy"] for r in runs if r["variant"] == v) for v in variants}
    figures = [figure(f"{v}: training img/s (median of {args.repeats})", medians[v], "img/s", "report", None)
               for v in variants]
    figures += [figure(f"{v}: cores busy (median)", busy[v], "cores", "report", None) for v in variants]
    faster = max(medians, key=medians.get)
    print(f"faster: {faster} ({medians[faster] / min(medians.values()):.2f}x)")
    write_result(args.out, {"command": "python bench/trainer_workers.py " + " ".join(sys.argv[1:]), "machine": info,
                            "load_after": load_after, "images": args.images, "imgsz": args.imgsz,
                            "epochs": args.epochs, "repeats": args.repeats, "variants": {v: VARIANTS[v] for v in variants},
                            "runs": runs, "figures": figures,
                            "median_images_per_second": medians, "median_cores_busy": busy, "faster": faster})


if __name__ == "__main__":
    main()
