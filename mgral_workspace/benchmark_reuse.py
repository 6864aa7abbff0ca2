"""What a benchmark result is keyed by, and when finished results may be reused (resumed, or copied across profiles).

Every seed directory `runs/seed_<s>/` holds `key.json`: the seed's run settings (all of params
but `tracking`, `benchmark` and `project_dir`, which name where results go, the profile and the
task runner; a user's .pt named in `detector.model` or `detector.pretrained` adds its content
digest) and the code version (a digest of this repository's files in the packages that compute
results, shipped weights included, plus the versions of the libraries that do). Each strategy's
project in it derives from those settings and its spec (the folder name). Every result cell
records the code version it was made with.

The rule: results are reused only under the same key. A seed directory made with other settings
is refused, naming the settings that differ (a parameter added since, left at its default, is not a
difference: its default is what the code did before it existed); nothing there is deleted or retrained (use another
`--out`, or delete the seed directory to start it again). A different code version is refused
too, unless the caller allows it (`mgral benchmark --allow-code-change`): then the key records
every code version that contributed, and each cell its own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

from mgral_workspace.atomic import write_json_atomic
from mgral_workspace.config import Params

KEY_FILE = "key.json"
SOURCE_PACKAGES = ("mgral_core", "mgral_formats", "mgral_backends", "mgral_workspace", "tasks", "flows")
LIBRARIES = ("torch", "torchvision", "ultralytics", "numpy", "scipy", "pot", "opencv-python", "pillow", "pandas")


class BenchmarkKeyError(ValueError):
    """Finished benchmark results were made with other settings or code than this run asks for."""


def run_settings(params: Params) -> dict:
    """What decides a benchmark run's results: everything but where it is tracked, the profile and its runner,
    plus the content digest of a weights file the detector section names by path."""
    settings = params.model_dump(mode="json", exclude={"tracking", "benchmark", "project_dir"})
    for key in ("model", "pretrained"):
        value = settings["detector"].get(key)
        if isinstance(value, str) and value.endswith(".pt") and Path(value).is_file():
            settings["detector"][f"{key}_sha256"] = hashlib.sha256(Path(value).read_bytes()).hexdigest()[:16]
    return settings


def code_version(root: Path | None = None) -> str:
    """A digest of the files of SOURCE_PACKAGES under `root` (default: this checkout; sources and shipped data
    such as the built-in pretrained weights, not bytecode caches) and the installed versions of LIBRARIES.
    Any edit to those files, a comment included, changes it."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for library in LIBRARIES:
        try:
            version = metadata.version(library)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{library}=={version}\0".encode())
    return digest.hexdigest()[:16]


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def settings_difference(old: dict, new: dict, limit: int = 8) -> str:
    """'detector.epochs: 40 -> 3; ...' for the settings that differ (at most `limit` shown)."""
    flat_old, flat_new = _flat(old), _flat(new)
    keys = sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k, "<unset>") != flat_new.get(k, "<unset>"))
    shown = [f"{k}: {flat_old.get(k, '<unset>')!r} -> {flat_new.get(k, '<unset>')!r}" for k in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def same_settings(old: dict, new: dict) -> bool:
    """Whether results made under settings `old` are this run's: equal, or different only by parameters `old`
    lacks that this run leaves at their defaults. Such a parameter was added after those results, and a new
    parameter's default is the behaviour the code had before it (the rule for adding one), so the results
    stand; they were made by another code version, which `check_seed_dir` refuses unless it is allowed."""
    if old == new:
        return True
    flat_old, flat_new = _flat(old), _flat(new)
    if set(flat_old) - set(flat_new):
        return False
    defaults = _flat(run_settings(Params()))
    return all(flat_old[k] == v if k in flat_old else k in defaults and defaults[k] == v for k, v in flat_new.items())


def check_seed_dir(seed_dir: Path, params: Params, code: str, allow_code_change: bool = False) -> str:
    """Whether `seed_dir`'s results may be reused by this run; writes nothing.

    Returns 'new' (no results yet), 'same' or 'code changed (allowed)'. Raises BenchmarkKeyError on
    other settings, on results without a readable key, or on another code version unless `allow_code_change`.
    """
    path = seed_dir / KEY_FILE
    if not path.exists():
        if seed_dir.exists() and any(p.name != KEY_FILE for p in seed_dir.iterdir()):
            raise BenchmarkKeyError(f"{seed_dir}: holds results but no {KEY_FILE} (made by an older MGRAL?), so "
                                    "what they were made with is unknown; use another --out or delete this folder")
        return "new"
    old_settings, old_codes = _read_key(path)
    settings = run_settings(params)
    if not same_settings(old_settings, settings):
        raise BenchmarkKeyError(
            f"{seed_dir} was made with other settings, so its results would be stale: "
            f"{settings_difference(old_settings, settings)}. Nothing was retrained or deleted; use another --out, "
            f"restore those settings, or delete {seed_dir} to run this seed again")
    if code in old_codes:
        return "same"
    if not allow_code_change:
        raise BenchmarkKeyError(
            f"{seed_dir} was made by other code (version {old_codes[-1]}, this checkout is {code}: a change in "
            f"{', '.join(SOURCE_PACKAGES)} or a library version). Nothing was retrained or deleted; pass "
            f"--allow-code-change to reuse its results anyway (each cell records its code version), use another "
            f"--out, or delete {seed_dir}")
    return "code changed (allowed)"


def claim_seed_dir(seed_dir: Path, params: Params, code: str, allow_code_change: bool = False) -> str:
    """`check_seed_dir`, then record this run's key in `seed_dir` (a new key, or one more code version)."""
    status = check_seed_dir(seed_dir, params, code, allow_code_change)
    if status == "new":
        write_json_atomic(seed_dir / KEY_FILE, {"settings": run_settings(params), "code": [code]})
    elif status != "same":
        settings, codes = _read_key(seed_dir / KEY_FILE)
        write_json_atomic(seed_dir / KEY_FILE, {"settings": settings, "code": codes + [code]})
    return status


def _read_key(path: Path) -> tuple[dict, list[str]]:
    try:
        key = json.loads(path.read_text())
        return key["settings"], list(key["code"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BenchmarkKeyError(f"{path}: unreadable benchmark key ({err}); use another --out or delete "
                                f"{path.parent}") from None


def same_key(seed_dir: Path, params: Params, code: str) -> bool:
    """Whether `seed_dir` was made with these settings by this code version."""
    path = seed_dir / KEY_FILE
    if not path.exists():
        return False
    try:
        key = json.loads(path.read_text())
        return key["settings"] == run_settings(params) and key["code"] == [code]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def copy_finished(source_seed_dir: Path, seed_dir: Path, name: str, params: Params, code: str,
                  done_marker: str) -> bool:
    """Copy `source_seed_dir/name` to `seed_dir/name` if it is finished (has `done_marker`) and was made with
    the same settings by the same code. Returns whether it was copied. The copy is made beside the target and
    renamed."""
    source, target = source_seed_dir / name, seed_dir / name
    if not (source / done_marker).exists() or not same_key(source_seed_dir, params, code):
        return False
    partial = seed_dir / f".{name}.copying"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, symlinks=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return True
