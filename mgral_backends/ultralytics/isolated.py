"""Detector training in a fresh Python process: `train_detector`, bitwise reproducible wherever it is called.

Ultralytics seeds the process-global RNGs (`random`, numpy, torch) at the start of a training and
draws its augmentations from them. Inside a Prefect flow or a Dask worker other threads draw from
the same `random` too (reconnect jitter, service loops), so the same training in the same process
gave a different detector from run to run (docs/RELIABILITY.md). A child process has no such
threads; it also returns its memory when it ends. `detector.isolate: false` trains in-process.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from mgral_workspace.config import DetectorParams
from mgral_backends.protocol import DetectorError, TrainedDetector, TrainingDiverged
from mgral_backends.ultralytics.child import child_main, run_child


def train_detector_isolated(data_yaml: Path, out_dir: Path, params: DetectorParams, *, epochs: int,
                            init_weights: Path | None = None, seed: int | None = None,
                            freeze: int | None = None, timeout: float | None = None) -> TrainedDetector:
    """`detector.train_detector` with the same arguments, run in a child process; its errors re-raised here."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    request = {"data_yaml": str(data_yaml), "out_dir": str(out_dir), "params": params.model_dump(mode="json"),
               "epochs": epochs, "init_weights": None if init_weights is None else str(init_weights),
               "seed": seed, "freeze": freeze}
    result, done = run_child(__name__, request, out_dir, timeout=timeout)
    if result is None:
        raise DetectorError(f"detector training for {out_dir} ended without a result (child process exit "
                            f"{done.returncode}; its output is above). Set detector.isolate: false to train "
                            "in this process and see the error directly")
    if "error" not in result:
        return TrainedDetector(Path(result["weights"]), result["val_map50_95"], result["val_map50"], result["epochs"])
    error = result["error"]
    if error["type"] == "TrainingDiverged":
        raise TrainingDiverged(Path(error["run_dir"]), error["epoch"], error["epochs"], error["what"])
    if error["type"] == "DetectorError":
        raise DetectorError(error["message"])
    raise RuntimeError(f"detector training for {out_dir} failed in its child process: {error['type']}: "
                       f"{error['message']}\n{error['traceback']}")


def _train(request: dict) -> dict:
    """The child's side: `train_detector` on the request; its errors as data for the parent to raise."""
    from mgral_backends.ultralytics.detector import train_detector

    init_weights = None if request["init_weights"] is None else Path(request["init_weights"])
    try:
        trained = train_detector(Path(request["data_yaml"]), Path(request["out_dir"]),
                                 DetectorParams(**request["params"]), epochs=request["epochs"],
                                 init_weights=init_weights, seed=request["seed"], freeze=request["freeze"])
        return {"weights": str(trained.weights), "val_map50_95": trained.val_map50_95,
                "val_map50": trained.val_map50, "epochs": trained.epochs}
    except TrainingDiverged as err:
        return {"error": {"type": "TrainingDiverged", "run_dir": str(err.run_dir), "epoch": err.epoch,
                          "epochs": err.epochs, "what": err.what}}
    except DetectorError as err:
        return {"error": {"type": "DetectorError", "message": str(err)}}
    except Exception as err:  # reported to the parent, which raises it with this traceback
        return {"error": {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}}


if __name__ == "__main__":
    child_main(_train)
