"""Shared pieces of the scale benchmarks (bench/reward_speed.py, agent_scale.py, hierarchical.py,
embed_throughput.py): synthetic pools and lookup tables, machine facts, verdicts and result files.

Not a benchmark itself. The synthetic embeddings imitate detector embeddings: 8 clusters in a
16-d latent space, mapped into 256-d and rectified (like a ReLU feature), plus noise; the same
generator as tests/core/test_wasserstein.py, built block by block so 1M rows stay cheap in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mgral_core.agent import resolve_threads
from mgral_workspace.config import AgentParams
from mgral_core.lookup_table import LookupRecord, LookupTable
from mgral_workspace.provenance import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
CLUSTERS, LATENT = 8, 16
_BLOCK = 1 << 16


def detector_like_embeddings(n: int, dim: int = 256, seed: int = 0, noise: float = 0.3
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 embeddings and (n,) cluster labels; row i depends only on (seed, its block)."""
    rng = np.random.default_rng([seed, 0])
    centers = rng.normal(0, 2.0, (CLUSTERS, LATENT))
    mix = rng.normal(0, 1 / np.sqrt(LATENT), (LATENT, dim))
    prevalence = rng.dirichlet(np.full(CLUSTERS, 2.0))  # unequal cluster sizes
    out = np.empty((n, dim), np.float32)
    labels = np.empty(n, np.int64)
    for block, start in enumerate(range(0, n, _BLOCK)):
        b_rng = np.random.default_rng([seed, 1, block])
        m = min(_BLOCK, n - start)
        lab = b_rng.choice(CLUSTERS, m, p=prevalence)
        z = centers[lab] + b_rng.normal(0, 1, (m, LATENT))
        out[start:start + m] = np.maximum(z @ mix, 0) + noise * b_rng.standard_normal((m, dim), np.float32)
        labels[start:start + m] = lab
    return out, labels


def mixed_batch(rng: np.random.Generator, labels: np.ndarray, k: int, concentration: float = 0.7) -> np.ndarray:
    """k distinct rows drawn with a random cluster mix (Dirichlet), so batches differ in composition."""
    weights = rng.dirichlet(np.full(CLUSTERS, concentration))[labels]
    return rng.choice(len(labels), k, replace=False, p=weights / weights.sum())


def synthetic_table(embeddings: np.ndarray, labels: np.ndarray, k: int, records: int, seed: int,
                    mixed: bool = True) -> LookupTable:
    """`records` records of k rows each: Dirichlet-mixed batches (or uniform random ones with mixed=False);
    value = 0.3 + 0.2 x (share of cluster 0) + noise, a smooth function of the batch's composition."""
    rng = np.random.default_rng([seed, 7])
    ids = np.arange(len(embeddings)).astype(str)
    out = []
    for r in range(records):
        rows = mixed_batch(rng, labels, k) if mixed else rng.choice(len(labels), k, replace=False)
        value = 0.3 + 0.2 * float((labels[rows] == 0).mean()) + float(rng.normal(0, 0.005))
        out.append(LookupRecord(f"record_{r:03d}", ids[rows], embeddings[rows], value))
    return LookupTable(out)


def machine() -> dict:
    """Date, CPU, cores, memory and load average, recorded next to every figure."""
    model = cpu_model()  # with its vector unit: AVX-512 or AVX2 only
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": model, "nproc": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags, "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                                                           * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__}


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def figure(label: str, value: float, unit: str, target: str, ok: bool | None) -> dict:
    """Print one figure with its target and PASS/FAIL (or 'info' when it has no target); return it as a dict."""
    status = "info" if ok is None else verdict(ok)
    print(f"  {label:<58s} {value:>12.4g} {unit:<8s} target {target:<14s} {status}", flush=True)
    return {"label": label, "value": value, "unit": unit, "target": target, "status": status}


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads: the agent's torch intra-op threads, by default what params.yaml's agent.threads gives here."""
    parser.add_argument("--threads", type=int, default=resolve_threads(AgentParams().threads),
                        help="torch intra-op threads for the agent (default: params.yaml agent.threads, 0 = one per core)")


def run_child(argv: list[str], timeout: float = 3600) -> dict:
    """Run `python <argv>` in a fresh process (for a clean ru_maxrss) and return the JSON it prints last."""
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def oracle_objects(oracle_labels: Path, ids) -> int | None:
    """Boxes the oracle puts in images `ids` (non-empty lines of their YOLO files); None if one has no file
    (not a simulation project). For after-the-fact diagnostics only: selection never reads the oracle."""
    labels = [Path(oracle_labels) / f"{i}.txt" for i in ids]
    if not all(p.exists() for p in labels):
        return None
    return sum(sum(1 for line in p.read_text().splitlines() if line.strip()) for p in labels)


def benchmark_seed(seed_dir: Path) -> dict:
    """A finished `mgral benchmark` seed's shared first detector and its strategies' first batches.

    `seed_dir` is `<bench>/runs/seed_<s>`: `base` holds the seed's cycle-1 project (params, detector,
    pool inference) that every strategy shares; each other folder is one strategy's run. Returns
    {"base", "weights", "inference": paths, "runs": [(run folder, its cycle-1 batch ids)]}, the runs
    sorted by name, those with no first selection left out. A seed with no first detector is refused."""
    base = Path(seed_dir) / "base"
    cycle = base / "cycles" / "cycle_001"
    weights = cycle / "detector" / "best.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: no first detector for {Path(seed_dir).name}")
    runs = []
    for run in sorted(p for p in Path(seed_dir).iterdir()
                      if p.is_dir() and p.name != "base" and not p.name.startswith(".")):
        selection = run / "cycles" / "cycle_001" / "selection.json"
        if selection.exists():
            runs.append((run, json.loads(selection.read_text())["ids"]))
    return {"base": base, "weights": weights, "inference": cycle / "pool_inference.npz", "runs": runs}


def write_result(name: str, payload: dict) -> Path:
    """Write bench/results/<name>.json (or <name>.json when name is a path) and say where."""
    path = Path(f"{name}.json") if "/" in name else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results in {path}")
    return path
