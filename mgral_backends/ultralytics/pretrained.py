"""The pretrained start: train YOLO on the generated pretraining set, ship its transferable weights, load them.

A *transfer file* is a plain `torch.save` dict (loadable with `weights_only=True`):

    {"format": "mgral-transfer-v1", "model": "yolov8n.yaml", "layers": 22,
     "classes": [...pretraining classes...], "imgsz": 160, "state_dict": {name: float16 tensor}}

It keeps the backbone and neck (YOLOv8 layers 0-21); the detection head, whose class layer
depends on the dataset, starts fresh. At 2.27 M parameters in float16 it is about 4.6 MB, under
the 5 MB the repo allows for committed weights. `detector.pretrained` names one: `builtin` (the
file shipped in this package, see BUILTIN_PROVENANCE), a path to a transfer file, or a path to
any Ultralytics .pt (e.g. COCO-pretrained YOLOv8n the user supplies), of which the same layers
are taken. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path

import torch
import yaml

from mgral_backends.protocol import DetectorError
from mgral_backends.ultralytics.env import YOLO

from ultralytics.nn.tasks import DetectionModel  # noqa: E402  (after env)

log = logging.getLogger(__name__)

FORMAT = "mgral-transfer-v1"
TRANSFER_LAYERS = 22  # YOLOv8 layers 0-9 backbone, 10-21 neck; 22 is the Detect head
BUILTIN_DIR = Path(__file__).with_name("weights")
BUILTIN_WEIGHTS = BUILTIN_DIR / "yolov8n-mgral-synth.pt"
BUILTIN_PROVENANCE = BUILTIN_DIR / "yolov8n-mgral-synth.json"


def _layer_of(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else -1


def export_transfer_weights(checkpoint: str | Path, out_path: str | Path, *, model_yaml: str, imgsz: int,
                            layers: int = TRANSFER_LAYERS) -> dict:
    """Write the transfer file of an Ultralytics checkpoint (its EMA weights) to `out_path`; return its header."""
    donor = YOLO(str(checkpoint)).model
    state = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in donor.state_dict().items()
             if 0 <= _layer_of(k) < layers}
    if not state:
        raise DetectorError(f"{checkpoint}: no weights in layers 0..{layers - 1}")
    names = donor.names if isinstance(donor.names, dict) else dict(enumerate(donor.names))
    header = {"format": FORMAT, "model": model_yaml, "layers": layers, "imgsz": int(imgsz),
              "classes": [str(names[i]) for i in sorted(names)]}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save({**header, "state_dict": state}, tmp)
    tmp.replace(out_path)
    return header


def read_transfer_file(path: str | Path) -> dict:
    """The transfer file's dict, checked; a clear DetectorError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"detector.pretrained: {path} does not exist (MGRAL never downloads weights)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a plain tensor dict: maybe an Ultralytics checkpoint, see donor_model
        raise DetectorError(f"{path}: not an MGRAL transfer file ({type(err).__name__})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("state_dict"), dict):
        raise DetectorError(f"{path}: not an MGRAL transfer file (format {FORMAT!r} expected)")
    return data


def donor_model(pretrained: str | Path, model_yaml: str) -> tuple[torch.nn.Module, int]:
    """A DetectionModel built from `model_yaml` holding the pretrained layers; (model, tensors transferred)."""
    pretrained = Path(pretrained)
    try:
        data = read_transfer_file(pretrained)
    except DetectorError:
        if not pretrained.is_file():
            raise
        data = None
    # the layers not transferred (the head) start from this model's init, and training copies them:
    # seed it, or two identical runs would start (and end) differently
    with contextlib.redirect_stdout(io.StringIO()), torch.random.fork_rng():
        torch.manual_seed(0)
        model = DetectionModel(model_yaml, verbose=False)
    own = model.state_dict()
    if data is not None:
        if Path(data["model"]).stem != Path(model_yaml).stem:
            raise DetectorError(f"{pretrained}: made for {data['model']}, but detector.model is {model_yaml}")
        source = {k: v.float() for k, v in data["state_dict"].items()}
    else:  # an Ultralytics .pt the user supplies: take the same layers
        try:
            source = YOLO(str(pretrained)).model.float().state_dict()
        except Exception as err:
            raise DetectorError(f"detector.pretrained: {pretrained} is neither an MGRAL transfer file nor a "
                                f"YOLO checkpoint ({type(err).__name__}: {err})") from err
        source = {k: v for k, v in source.items() if 0 <= _layer_of(k) < TRANSFER_LAYERS}
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(source) // 2:
        raise DetectorError(f"detector.pretrained: {pretrained} matches only {len(matched)} of {len(source)} "
                            f"tensors of {model_yaml}; is it made for another model?")
    model.load_state_dict(matched, strict=False)
    return model, len(matched)


def load_pretrained(yolo: YOLO, model_yaml: str, pretrained: str | Path) -> YOLO:
    """Seed a YOLO built from `model_yaml` with the pretrained layers (the rest fresh); returns it.

    `YOLO.load(module)` marks the model as seeded, so `YOLO.train` transfers every matching tensor
    into the model it builds for the dataset's classes (Ultralytics' own fine-tuning path).
    """
    donor, n = donor_model(pretrained, model_yaml)
    yolo.load(donor)
    log.info("pretrained start: %d tensors from %s", n, pretrained)
    return yolo


def yolo_with_pretrained(model_yaml: str, pretrained: str | Path) -> YOLO:
    """A YOLO built from its yaml whose training starts from the pretrained layers."""
    return load_pretrained(YOLO(model_yaml), model_yaml, pretrained)


def resolve_pretrained(value: str | None) -> Path | None:
    """`detector.pretrained` as a file: 'builtin' is the shipped transfer file; None trains from scratch."""
    if value is None:
        return None
    path = BUILTIN_WEIGHTS if value == "builtin" else Path(value)
    if not path.is_file():
        where = "the shipped builtin start (git lfs? a partial checkout?)" if value == "builtin" else "the path given"
        raise DetectorError(f"detector.pretrained: {path} does not exist ({where}); MGRAL never downloads "
                            "weights. Set detector.pretrained to null to train from scratch.")
    return path


def write_provenance(path: str | Path, record: dict) -> None:
    Path(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def pretrain_detector(data_dir: str | Path, out_dir: str | Path, *, model_yaml: str, epochs: int, imgsz: int,
                      batch: int, seed: int, cache: bool = True, progress=None) -> dict:
    """Train `model_yaml` from scratch on a pretraining set (YOLO layout); resumable; return a summary dict.

    Ultralytics writes `last.pt` after every epoch, so a run cut off mid-way (a session ending, a
    kill) resumes from it on the next call; a finished run is recognised by `out_dir/trained.json`
    and not trained again. `progress(epoch, epochs)` is called after every epoch.
    """
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    summary_path = out_dir / "trained.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    data_yaml = out_dir / "data.yaml"
    names = yaml.safe_load((data_dir / "data.yaml").read_text())["names"]
    data_yaml.write_text(yaml.safe_dump(
        {"path": str(data_dir), "train": "images/train", "val": "images/val", "names": names}, sort_keys=False))
    run_dir = out_dir / "ultralytics"
    last = run_dir / "weights" / "last.pt"
    started = time.perf_counter()
    resumed = last.exists()
    model = YOLO(str(last)) if resumed else YOLO(model_yaml)
    if progress is not None:
        def report(trainer) -> None:  # the final evaluation calls this hook again with epoch + 1: skip that one
            if trainer.epoch < trainer.epochs:
                progress(trainer.epoch + 1, trainer.epochs)

        model.add_callback("on_fit_epoch_end", report)
    with contextlib.redirect_stdout(io.StringIO()):
        if resumed:
            results = model.train(resume=True)
        else:
            results = model.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, seed=seed,
                                  deterministic=True, plots=False, amp=False, verbose=False, exist_ok=True,
                                  val=False, project=str(out_dir), name="ultralytics", patience=epochs,
                                  cache="ram" if cache else False, device="cpu", workers=0)
    best = run_dir / "weights" / "best.pt"
    box = getattr(results, "box", None)
    summary = {"checkpoint": str(best if best.exists() else last), "epochs": epochs,
               "val_map50_95": float(box.map) if box is not None else float("nan"),
               "val_map50": float(box.map50) if box is not None else float("nan"),
               "resumed": resumed, "seconds_last_sitting": round(time.perf_counter() - started, 1)}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
