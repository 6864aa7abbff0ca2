"""Where a shipped artefact came from: command, generator settings, commit, checksum, machine, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path

from mgral_formats.image_folder import content_hash

REPO = Path(__file__).resolve().parents[1]


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the same digest the import uses to find duplicate images)."""
    return content_hash(Path(path))


def git_commit(repo: Path = REPO) -> str:
    """HEAD of the code's repository, with '+dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (as lscpu gives it) and its widest vector unit: 'AMD EPYC (AVX-512)',
    'AMD EPYC (AVX2, no AVX-512)'. Machines sold under one name differ by that, and the same training took
    2.6 times as long on the AVX2-only one; every timing names it. `cpuinfo`: /proc/cpuinfo's text (tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    lines = cpuinfo.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    features = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("Features")), []))
    if flags:  # x86
        vector = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    elif features:  # Arm: 'Features' instead of 'flags', and often no 'model name': the core's part number
        part = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("CPU part")), "")
        model = f"{model} part {part}" if part and not any(line.startswith("model name") for line in lines) else model
        vector = ("SVE" if "sve" in features else "NEON, no SVE" if features & {"asimd", "neon"} else "no NEON")
    else:
        return model
    return f"{model} ({vector})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance_record(path: str | Path, *, command: str, header: dict, spec, training: dict) -> dict:
    """The provenance JSON of the file at `path` (tests/backends/test_pretrained.py checks file against record)."""
    path = Path(path)
    return {
        "file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "command": command,
        "generator": asdict(spec) if is_dataclass(spec) else dict(spec),
        "weights": header,
        "training": training,
        "commit": git_commit(),
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count()},
        "versions": {name: _version(name) for name in ("torch", "ultralytics", "pillow", "numpy")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
