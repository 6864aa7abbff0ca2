"""Pools of 100k images (issue #16, section 5): `mgral init`, one cycle's bookkeeping and `mgral status` on a
project of N tiny images, timed and with their peak memory, against targets.

Everything but the detector is real: the YOLO reader (`mgral init --from`, unlabeled by the format's rule: an
image without a label file), the pool table, the project lock, the selection path (`selection.select_batch`),
the batch exporter, the importer (`mgral import` of a Label Studio JSON export made from the batch's
pre-annotations, as an annotator who accepts every pre-label would give it back) and git + DVC versioning
(`tasks.versioning`). The detector is tests/backends/fake_detector.py (answers from a hash of each file
name, `--dim`-wide embeddings), so training, testing and the pool pass cost almost nothing and are
reported apart, not as bookkeeping.

The dataset is generated once per size into `--cache` (32 px PNGs of a flat background and 1-3 boxes;
1 % of the pool labeled, 0.5 % each for val and test, all labeled) and reused by later runs. Each phase
runs in its own process:

  init        `mgral init PROJECT --from DATASET` (the CLI's command function, in-process, with timers
              around its steps; then the same command as a subprocess, `--init-cli`)
  cycle       per strategy of `--strategies`, one cycle: lock, the wait/gap checks, fake train + test +
              pool pass, then the bookkeeping: select (the whole pool), export + hand-out, version
  import      `mgral import PROJECT batch.json` (validate, merge, commit, status)
  status      `mgral status PROJECT` as a subprocess (whole command, Python start-up included; median
              of 3) and in-process (median of 3 after the imports)

Peak memory is ru_maxrss from wait4() of each phase's process: the largest resident set of that process
or of any git/dvc process it ran (each process on its own), and, sampled every 0.1 s with psutil, the
largest sum over the phase's process tree (the Python process and its git/dvc children at once).

  python bench/pool_scale.py --sizes 10000
  python bench/pool_scale.py --sizes 10000,100000 --cache /work/poolscale-cache
  python bench/pool_scale.py --sizes 10000 --profile /tmp/pool_prof   # cProfile of each phase (slower)
  python bench/pool_scale.py --sizes 100000 --dvc-cache-type hardlink --out pool_scale_hardlink
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLASSES = ("square", "wide", "tall")
TARGETS = {"init_s": 600.0, "cycle_s": 60.0, "status_s": 2.0, "memory_gib": 4.0}
GIB = 2 ** 30


# Machine facts ---------------------------------------------------------------------------------------

def machine() -> dict:
    """The CPU (model and vector unit), nproc, memory, load average and tool versions, beside every figure."""
    from mgral_workspace.provenance import cpu_model

    model = cpu_model()  # the model name lscpu shows, with the vector unit (AVX-512 or AVX2 only)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    dvc = Path(sys.executable).parent / "dvc"
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": model, "nproc": int(nproc or os.cpu_count()),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
            "dvc": subprocess.run([str(dvc) if dvc.exists() else "dvc", "--version"], capture_output=True,
                                  text=True).stdout.strip()}


# The dataset -----------------------------------------------------------------------------------------

def split_sizes(images: int) -> dict[str, tuple[int, int]]:
    """{split: (images, labeled)}: val and test 0.5 % each (at least 20, all labeled); the rest is the pool,
    1 % of it labeled (at least 30)."""
    val = test = max(20, images // 200)
    pool = images - val - test
    return {"train": (pool, max(30, pool // 100)), "val": (val, val), "test": (test, test)}


def _draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[str]]:
    """One (size, size, 3) image of a flat background and 1-3 filled boxes, and its YOLO label lines."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3)
    lines = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(0, len(CLASSES)))
        w, h = (int(v) for v in rng.integers(4, size // 2, 2))
        w, h = (w, max(4, w // 2)) if cls == 1 else (max(4, h // 2), h) if cls == 2 else (w, w)
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
    return image, lines


def cached_dataset(cache: Path, images: int, size: int, seed: int) -> tuple[Path, float | None]:
    """The YOLO dataset of `images` images under `cache` (made once: a stamp file marks it complete);
    returns (folder, seconds it took to generate, None when it was cached)."""
    from PIL import Image

    folder = cache / f"pool_{images}_px{size}_seed{seed}"
    spec = {"images": images, "size": size, "seed": seed, "splits": split_sizes(images), "classes": CLASSES}
    stamp = folder / ".complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(spec)):
        return folder, None
    start = time.perf_counter()
    partial = folder.with_name(folder.name + ".partial")
    for old in (folder, partial):
        if old.exists():
            shutil.rmtree(old)
    for number, (split, (count, labeled)) in enumerate(split_sizes(images).items()):
        (partial / "images" / split).mkdir(parents=True)
        (partial / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image, lines = _draw(np.random.default_rng([seed, number, i]), size)
            name = f"{split}_{i:06d}"
            Image.fromarray(image).save(partial / "images" / split / f"{name}.png")
            if i < labeled:
                (partial / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (partial / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\ntest: images/test\n"
                                       f"names: {list(CLASSES)}\n")
    partial.rename(folder)
    stamp.write_text(json.dumps(spec))
    return folder, time.perf_counter() - start


def bench_params(path: Path, budget: int) -> Path:
    """The repository's params.yaml with selection.budget = `budget` and the pool versioned."""
    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["selection"]["budget"] = budget
    data["tracking"]["version_pool"] = True
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def annotated_export(project: Path, cycle: int, out: Path) -> Path:
    """A Label Studio JSON export of the batch of `cycle`: every task annotated with its pre-annotations."""
    tasks = json.loads((project / "exports" / f"cycle_{cycle:03d}" / "label_studio_tasks.json").read_text())
    for number, task in enumerate(tasks):
        task["id"] = number + 1
        task["annotations"] = [{"id": number + 1, "result": task["predictions"][0]["result"], "was_cancelled": False,
                                "created_at": "2026-12-03T10:00:00Z", "updated_at": "2026-12-03T10:00:00Z"}]
    out.write_text(json.dumps(tasks))
    return out


# The phases, each in its own process -----------------------------------------------------------------

def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and of the children it has reaped: git, dvc)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime


class Timers:
    """Wall and CPU seconds per label, by wrapping module attributes; `calls` counts the wrapped calls.

    CPU seconds (user + system, git/dvc children included) are what the step would take on an idle
    machine if it never waited for the disk; wall seconds are what it took here, on shared cores."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, name: str, label: str | None = None) -> None:
        original, label = getattr(owner, name), label or name

        def timed(*args, **kwargs):
            start = _clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(label, start)

        setattr(owner, name, timed)

    def add(self, label: str, start: tuple[float, float]) -> None:
        wall, cpu = _clock()
        self.seconds[label] = self.seconds.get(label, 0.0) + wall - start[0]
        self.cpu[label] = self.cpu.get(label, 0.0) + cpu - start[1]
        self.calls[label] = self.calls.get(label, 0) + 1

    def step(self, label: str):
        timers = self

        class _Step:
            def __enter__(self):
                self.start = _clock()

            def __exit__(self, *exc):
                timers.add(label, self.start)

        return _Step()

    def result(self, start: tuple[float, float], **extra) -> dict:
        wall, cpu = _clock()
        return {"seconds": wall - start[0], "cpu_seconds": cpu - start[1], "steps": self.seconds, "cpu": self.cpu,
                "calls": self.calls, **extra}


def _time_versioning_commands(timers: Timers, cache_type: str | None = None) -> None:
    """Each git/dvc command of tasks.versioning timed as 'git add', 'dvc add images oracle', ...; with
    `cache_type`, `dvc config cache.type CACHE_TYPE` right after `dvc init` (the layout measured)."""
    import tasks.versioning as versioning

    original = versioning._run

    def run(args, cwd):
        start = _clock()
        try:
            return original(args, cwd)
        finally:
            words = [Path(args[0]).name, *[a for a in args[1:] if not a.startswith("-")][:3]]
            timers.add("  " + " ".join(words)[:60], start)
            if cache_type and words[:2] == ["dvc", "init"]:
                run([args[0], "config", "cache.type", cache_type], cwd)

    versioning._run = run


def _time_pool_loads(timers: Timers) -> None:
    from mgral_workspace.pool import PoolState

    load = PoolState.load.__func__

    def timed(cls, project_dir):
        start = _clock()
        try:
            return load(cls, project_dir)
        finally:
            timers.add("  PoolState.load (pool.csv read + checked)", start)

    PoolState.load = classmethod(timed)


def child_init(args: dict) -> dict:
    """The CLI's `init` command function with timers around its steps (they are imported when it runs)."""
    import mgral_cli.main as cli
    import mgral_formats
    import mgral_workspace.project as project_module
    import tasks.versioning as versioning

    timers = Timers()
    timers.wrap(mgral_formats, "load_dataset", "read + check the dataset (load_dataset)")
    timers.wrap(project_module, "init_project", "write the project (init_project)")
    timers.wrap(cli, "_write_project_params", "write params.yaml")
    timers.wrap(versioning, "ensure_versioned", "version: git + DVC (ensure_versioned)")
    _time_versioning_commands(timers, args.get("cache_type"))
    timers.wrap(cli, "_status", "status at the end")
    start = _clock()
    cli.init(Path(args["project"]), Path(args["dataset"]), "auto", False, False, None, Path(args["params"]),
             unlabeled=None, classes=None, eval_in_first_batch=False)
    return timers.result(start)


def child_cycle(args: dict) -> dict:
    """One real-labeling cycle with the fake detector, as flows/cycle.py runs it (no Prefect, no MLflow)."""
    sys.path.insert(0, str(ROOT))
    from mgral_workspace import cycle_steps as steps
    from mgral_workspace.config import load_params
    from mgral_workspace.detector_health import detector_warnings
    from mgral_workspace.pool import PoolState
    from mgral_workspace.project import load_project_info
    from mgral_workspace.project_lock import project_lock
    from mgral_workspace.selection import select_batch
    from tasks.versioning import commit_pool, ensure_versioned
    from tests.backends.fake_detector import FakeDetectorBackend

    project, strategy = Path(args["project"]), args["strategy"]
    timers = Timers()
    _time_versioning_commands(timers)
    _time_pool_loads(timers)
    start = _clock()
    params = load_params(project / "params.yaml")
    info = load_project_info(project)
    backend = FakeDetectorBackend(num_classes=len(info.class_names), dim=args["dim"], imgsz=args["image_size"])
    with project_lock(project, "bench cycle"):
        with timers.step("lock, wait and gap checks (labeling_wait, training_gaps)"):
            waiting = steps.labeling_wait(project, params.annotation.min_labeled_fraction)
            gaps = steps.training_gaps(PoolState.load(project))
            if waiting or gaps:
                raise RuntimeError(f"the cycle cannot go on: {waiting or gaps}")
            cycle = PoolState.load(project).current_cycle + 1
        with timers.step("fake: train"):
            trained = steps.train_cycle_detector(project, params, cycle, log=lambda message: None, backend=backend)
        with timers.step("fake: test mAP (evaluate_split)"):
            evaluation = steps.evaluate_split(project, trained.weights, params, "test", backend=backend)
            steps.save_evaluation(project, cycle, evaluation, len(PoolState.load(project).labeled_pool_ids))
        with timers.step("fake: pool pass, detections + embeddings (infer_pool)"):
            inference = steps.infer_pool(project, trained.weights, params.detector, cycle, backend=backend)
        with timers.step("detector health check (detector_warnings, reads the pool pass)"):
            detector_warnings(trained.val_map50_95, inference)
        with timers.step(f"select ({strategy}, whole pool)"):
            ids, _ = select_batch(project, params, str(inference), cycle, strategy, params.selection.budget,
                                  str(trained.weights))
        with timers.step("export + hand out (hand_out_batch)"):
            export = steps.hand_out_batch(project, ids, cycle, inference, f"bench-cycle{cycle}",
                                          params.annotation.prelabel_conf)
        with timers.step("version: git + DVC commit (commit_pool)"):
            ensure_versioned(project)
            commit_pool(project, f"mgral: cycle {cycle}: {strategy} selected {len(ids)} images")
    return timers.result(start, cycle=cycle, selected=len(ids), export=str(export),
                         candidates=int(PoolState.load(project).counts()["unlabeled"]))


def child_import(args: dict) -> dict:
    """The CLI's `import` command function with timers around its steps."""
    import mgral_cli.main as cli
    import mgral_workspace.annotation_import as importer
    import tasks.versioning as versioning

    timers = Timers()
    timers.wrap(importer, "import_annotations", "validate + merge (import_annotations)")
    timers.wrap(versioning, "commit_pool", "version: git + DVC commit (commit_pool)")
    _time_versioning_commands(timers)
    timers.wrap(cli, "_announce_batch_labeled", "event mgral.batch.labeled")
    timers.wrap(cli, "_status", "status at the end")
    _time_pool_loads(timers)
    start = _clock()
    cli.import_(Path(args["project"]), Path(args["source"]), False, None, None, None)
    return timers.result(start)


def child_status(args: dict) -> dict:
    """`mgral status` in-process: the command function, median of 3, after its modules are imported; each run
    reads pool.csv afresh, as a new `mgral status` process does (its summary while it matches pool.csv's bytes,
    mgral_workspace.pool_summary, so `pool_loads_per_status` is 0 then)."""
    import mgral_cli.main as cli
    from mgral_workspace import pool

    timers = Timers()
    _time_pool_loads(timers)
    runs, cpu = [], []
    for _ in range(3):
        pool._PARSED.tables.clear()
        start = _clock()
        cli.status(Path(args["project"]))
        end = _clock()
        runs.append(end[0] - start[0])
        cpu.append(end[1] - start[1])
    return {"seconds": statistics.median(runs), "cpu_seconds": statistics.median(cpu), "runs": runs,
            "pool_loads_per_status": timers.calls.get("  PoolState.load (pool.csv read + checked)", 0) // 3}


CHILDREN = {"init": child_init, "cycle": child_cycle, "import": child_import, "status": child_status}


def _child_main(phase: str, payload: str) -> None:
    result = CHILDREN[phase](json.loads(payload))
    print("\n" + json.dumps(result), flush=True)


# Running a phase: wall time, ru_maxrss of the process and its children, sampled tree RSS --------------

def run_process(argv: list[str], log: Path, env: dict | None = None) -> dict:
    """Run `argv`, its output into `log`; wall seconds, CPU seconds (user + system, its reaped children
    included), ru_maxrss (wait4: the process or any child it reaped, each on its own) and the sampled
    peak of the summed RSS of its process tree."""
    import psutil

    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        tree_peak, done = [0], threading.Event()

        def sample():
            try:
                parent = psutil.Process(process.pid)
                while not done.is_set():
                    total = 0
                    for p in [parent, *parent.children(recursive=True)]:
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
                    tree_peak[0] = max(tree_peak[0], total)
                    done.wait(0.1)
            except psutil.Error:
                return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {process.returncode}); its output:\n"
                           + log.read_text()[-4000:])
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_gib": usage.ru_maxrss * 1024 / GIB,
            "tree_peak_gib": tree_peak[0] / GIB}


def run_phase(phase: str, payload: dict, logs: Path, tag: str, env: dict, profile: Path | None) -> dict:
    """One phase in a fresh process (under cProfile with `profile`); its own JSON result plus the process figures."""
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile / f"{tag}.prof")]
    measured = run_process([*prefix, str(Path(__file__).resolve()), "--child", phase, json.dumps(payload)],
                           logs / f"{tag}.log", env)
    result = json.loads((logs / f"{tag}.log").read_text().strip().splitlines()[-1])
    return {**result, **measured}


def run_cli(args: list[str], logs: Path, tag: str, env: dict) -> dict:
    return run_process([sys.executable, "-m", "mgral_cli.main", *args], logs / f"{tag}.log", env)


# One size ----------------------------------------------------------------------------------------------

def run_size(images: int, args: argparse.Namespace, env: dict) -> dict:
    cache = Path(args.cache)
    dataset, generated = cached_dataset(cache, images, args.image_size, args.seed)
    print(f"\n== {images:,} images ({dataset}; {'generated in %.1f s' % generated if generated else 'cached'})",
          flush=True)
    work = Path(args.work) / f"pool_{images}"
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    logs, project = work / "logs", work / "project"
    params = bench_params(work / "params.yaml", args.budget)
    profile = None
    if args.profile:
        profile = Path(args.profile) / f"pool_{images}"
        profile.mkdir(parents=True, exist_ok=True)
    phases: dict[str, dict] = {}

    phases["init"] = run_phase("init", {"project": str(project), "dataset": str(dataset), "params": str(params),
                                        "cache_type": args.dvc_cache_type}, logs, "init", env, profile)
    print(f"  init (in-process CLI command) {phases['init']['seconds']:.1f} s ({phases['init']['cpu_s']:.1f} s CPU)",
          flush=True)
    if args.init_cli:
        cli_project = work / "project_cli"
        phases["init_cli"] = run_cli(["init", str(cli_project), "--from", str(dataset), "--params", str(params)],
                                     logs, "init_cli", env)
        print(f"  init (`mgral init` subprocess) {phases['init_cli']['wall_s']:.1f} s", flush=True)
        shutil.rmtree(cli_project)
    for number, strategy in enumerate(args.strategies.split(","), start=1):
        cycle = run_phase("cycle", {"project": str(project), "strategy": strategy, "dim": args.dim,
                                    "image_size": args.image_size}, logs, f"cycle{number}_{strategy}", env, profile)
        source = annotated_export(project, cycle["cycle"], work / f"batch_{cycle['cycle']:03d}.json")
        imported = run_phase("import", {"project": str(project), "source": str(source)}, logs,
                             f"import{number}", env, profile)
        counted = [k for k in cycle["steps"] if not k.startswith(("fake:", "  "))]
        bookkeeping = sum(cycle["steps"][k] for k in counted) + imported["wall_s"]
        bookkeeping_cpu = sum(cycle["cpu"][k] for k in counted) + imported["cpu_s"]
        phases[f"cycle{number}"] = {"strategy": strategy, "cycle": cycle, "import": imported,
                                    "bookkeeping_s": bookkeeping, "bookkeeping_cpu_s": bookkeeping_cpu}
        print(f"  cycle {cycle['cycle']} ({strategy}): bookkeeping {bookkeeping:.1f} s ({bookkeeping_cpu:.1f} s CPU)",
              flush=True)
    phases["status"] = run_phase("status", {"project": str(project)}, logs, "status", env, profile)
    status_cli = [run_cli(["status", str(project)], logs, f"status_cli{i}", env) for i in range(3)]
    phases["status_cli"] = {"wall_s": statistics.median(r["wall_s"] for r in status_cli),
                            "cpu_s": statistics.median(r["cpu_s"] for r in status_cli),
                            "runs": [r["wall_s"] for r in status_cli],
                            "maxrss_gib": max(r["maxrss_gib"] for r in status_cli),
                            "tree_peak_gib": max(r["tree_peak_gib"] for r in status_cli)}
    disk = subprocess.run(["du", "-sm", str(project)], capture_output=True, text=True).stdout.split()[0]
    if not args.keep:
        shutil.rmtree(work)
    return {"images": images, "splits": split_sizes(images), "budget": args.budget, "dataset": str(dataset),
            "dvc_cache_type": args.dvc_cache_type or "DVC's default (reflink, else copy)",
            "generated_s": generated, "project_mib": int(disk), "phases": phases}


def figures_of(run: dict, profiled: bool) -> list[dict]:
    """The headline figures of one size against the targets (no verdict for a profiled run): each time as
    wall seconds here (shared cores: an upper bound) and as CPU seconds (user + system, git/dvc included)."""
    from scale_common import figure

    p = run["phases"]
    ok = (lambda good: None) if profiled else (lambda good: good)

    def timed(label: str, wall: float, cpu: float, target: float) -> list[dict]:
        return [figure(f"{label} (wall)", wall, "s", f"<= {target:.0f} s", ok(wall <= target)),
                figure(f"{label} (CPU)", cpu, "s", f"<= {target:.0f} s", ok(cpu <= target))]

    out = timed("init: mgral init --from", p["init"]["wall_s"], p["init"]["cpu_s"], TARGETS["init_s"])
    if "init_cli" in p:
        out += timed("init: `mgral init` as a subprocess", p["init_cli"]["wall_s"], p["init_cli"]["cpu_s"],
                     TARGETS["init_s"])
    for key in sorted(k for k in p if k.startswith("cycle")):
        c = p[key]
        out += timed(f"cycle {c['cycle']['cycle']} bookkeeping, {c['strategy']}", c["bookkeeping_s"],
                     c["bookkeeping_cpu_s"], TARGETS["cycle_s"])
    out += timed("status: `mgral status` subprocess, median of 3", p["status_cli"]["wall_s"], p["status_cli"]["cpu_s"],
                 TARGETS["status_s"])
    out.append(figure("status: in-process, median of 3 (wall)", p["status"]["seconds"], "s", "-", None))
    rss = max(v.get("maxrss_gib", 0) for v in _processes(p))
    tree = max(v.get("tree_peak_gib", 0) for v in _processes(p))
    out.append(figure("peak memory, one process (ru_maxrss, any phase)", rss, "GiB",
                      f"<= {TARGETS['memory_gib']:.0f} GiB", ok(rss <= TARGETS["memory_gib"])))
    out.append(figure("peak memory, process tree sum (sampled, any phase)", tree, "GiB",
                      f"<= {TARGETS['memory_gib']:.0f} GiB", ok(tree <= TARGETS["memory_gib"])))
    return out


def _processes(phases: dict) -> list[dict]:
    found = []
    for value in phases.values():
        if "maxrss_gib" in value:
            found.append(value)
        found += [v for v in value.values() if isinstance(v, dict) and "maxrss_gib" in v]
    return found


def print_steps(run: dict) -> None:
    """Where each phase's time went."""
    for name, phase in run["phases"].items():
        parts = [(name, phase)] if "steps" in phase else \
            [(f"{name} {k}", v) for k, v in phase.items() if isinstance(v, dict) and "steps" in v]
        for label, part in parts:
            print(f"  {label}: {part.get('seconds', 0):.2f} s in-process, {part['wall_s']:.2f} s wall, "
                  f"{part['cpu_s']:.2f} s CPU, "
                  f"ru_maxrss {part['maxrss_gib']:.2f} GiB, tree {part['tree_peak_gib']:.2f} GiB")
            for step, seconds in part["steps"].items():
                calls = part.get("calls", {}).get(step, 1)
                print(f"      {step:<62s} {seconds:8.2f} s {part['cpu'][step]:8.2f} s CPU"
                      + (f"  ({calls} calls)" if calls > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated project sizes (images in all)")
    parser.add_argument("--cache", default="/work/poolscale-cache", help="where generated datasets are kept")
    parser.add_argument("--work", default=None, help="where projects are made (default: a temporary folder)")
    parser.add_argument("--budget", type=int, default=1000, help="images selected per cycle")
    parser.add_argument("--strategies", default="entropy_sum,random", help="one cycle per strategy, in order")
    parser.add_argument("--dim", type=int, default=256, help="fake embedding width (YOLOv8n's is 256)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-cli", action="store_true", help="also time `mgral init` as a subprocess")
    parser.add_argument("--dvc-cache-type", default=None, choices=["hardlink", "symlink", "copy"],
                        help="set the project's DVC cache.type right after `dvc init` (default: DVC's own)")
    parser.add_argument("--profile", default=None, help="cProfile every phase into this folder (figures not kept)")
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs")
    parser.add_argument("--out", default="pool_scale", help="bench/results/<out>.json (runs of other sizes are kept)")
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_main(*args.child)
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from scale_common import write_result

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "DVC_NO_ANALYTICS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)  # the import's event is then only logged, as with no server
    info = machine()
    print(f"{info['date']}  {info['cpu']}  nproc {info['nproc']}  load {info['loadavg']}  {info['dvc'] and 'dvc ' + info['dvc']}",
          flush=True)
    temporary = None
    if args.work is None:
        temporary = tempfile.TemporaryDirectory(prefix="mgral-poolscale-")
        args.work = temporary.name
    path = RESULTS / f"{args.out}.json" if "/" not in args.out else Path(f"{args.out}.json")
    previous = json.loads(path.read_text()) if path.exists() and not args.profile else {}
    runs = previous.get("runs", {})
    try:
        for images in (int(s) for s in args.sizes.split(",")):
            run = run_size(images, args, env)
            print_steps(run)
            print(f"-- {images:,} images: figures against targets")
            run["figures"] = figures_of(run, bool(args.profile))
            run.update(command="python bench/pool_scale.py " + " ".join(sys.argv[1:]), machine=info,
                       load_after=[round(x, 2) for x in os.getloadavg()])
            runs[str(images)] = run
    finally:
        if temporary is not None:
            temporary.cleanup()
    sizes = sorted(runs, key=int)
    if len(sizes) > 1:
        small, large = runs[sizes[0]], runs[sizes[-1]]
        print(f"-- scaling {int(sizes[0]):,} -> {int(sizes[-1]):,} images ({int(sizes[-1]) / int(sizes[0]):.0f}x "
              "the images; linear = the same factor)")
        for a, b in zip(small["figures"], large["figures"]):
            if a["label"] == b["label"] and a["value"]:
                print(f"  {a['label']:<58s} {a['value']:>9.3g} -> {b['value']:>9.3g} {a['unit']:<4s} "
                      f"x{b['value'] / a['value']:.1f}")
    if args.profile:
        print(f"profiles in {args.profile} (python -m pstats FILE); figures not written")
        return
    write_result(str(path.with_suffix("")) if "/" in args.out else args.out,
                 {"issue": "#16 section 5: pools of 100k images", "targets": TARGETS, "runs": runs})


if __name__ == "__main__":
    main()
