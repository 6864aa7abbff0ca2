"""The `mgral` command line: generate data, create projects, run cycles and campaigns, show status."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
import yaml
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.table import Table

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _exit_on_sigterm():
    """Let SIGTERM (`kill`, a service manager, a CI job cancelled) end `mgral` as Ctrl-C does: by an exception,
    so that Prefect's temporary server, the Dask cluster and the MLflow runs are shut down and marked on the way
    out. Python's default for SIGTERM ends the process at once and left the temporary Prefect server running
    (an orphan holding its port and memory). Running training children are stopped first (a campaign on a
    local thread would otherwise finish its training before the process could end). Exit status 143
    (128 + 15, the shell's convention for a SIGTERM; the default, killed by the signal, showed as -15).

    Returns the handler it replaced (restored by `_Commands.main`), or None off the main thread (no handler).
    """
    from mgral_backends.ultralytics.child import stop_children

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        stop_children()
        raise SystemExit(128 + signal.SIGTERM)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, terminate)


class _Commands(TyperGroup):
    """The `mgral` command group; a usage mistake (missing argument, bad option value, unknown command) is
    printed as `error: ...` after the usage line, exit code 2, like every other user error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra):
        previous = _exit_on_sigterm()  # restored below: a CliRunner in tests runs this in the test's process
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # Typer's (vendored) click errors derive from it
            ctx = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError":  # `mgral` alone: the help, as asked
                typer.echo(ctx.get_help() if ctx is not None else err.format_message())
                code = err.exit_code
            else:
                if ctx is not None:
                    typer.echo(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.", err=True)
                typer.echo(f"error: {err.format_message()}", err=True)
                code = err.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            code = 1
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Commands,
                  help="MGRAL: choose which images to label next to train an object detector.")
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


def _fail(message: str) -> None:
    # escaped: file names and messages hold brackets ("box [1, 2, 3, 4]", "[x].png") that are not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=2)


def _params(params_file: Path | None, project: Path | None = None):
    from mgral_workspace.config import ConfigError, Params, load_params

    try:
        if params_file is not None:
            return load_params(params_file)
        if project is not None and (project / "params.yaml").exists():
            return load_params(project / "params.yaml")
    except ConfigError as err:
        _fail(str(err))
    if Path("params.yaml").is_file():
        try:
            params = load_params("params.yaml")
        except ConfigError as err:
            _fail(f"{err}\n(this params.yaml was taken from the working directory {Path.cwd()} because no --params "
                  "was given; name a file with --params FILE, or run from another directory)")
        err_console.print(f"parameters: {Path('params.yaml').resolve()} (the working directory's params.yaml; "
                          "--params FILE names another)", markup=False, highlight=False)
        return params
    return Params()


def _write_project_params(project: Path, params) -> None:
    from mgral_workspace.atomic import write_text_atomic

    data = params.model_dump()
    data["project_dir"] = str(project)
    write_text_atomic(project / "params.yaml", yaml.safe_dump(data, sort_keys=False))


@app.command()
def generate(out: Path = typer.Argument(..., help="directory to create (must not exist or be empty)"),
             params_file: Optional[Path] = typer.Option(None, "--params", help="params.yaml with a dataset section"),
             ) -> None:
    """Generate the built-in synthetic detection dataset (YOLO + COCO JSON) from params' dataset section."""
    from mgral_workspace.synthetic import SyntheticSpec, generate_dataset

    params = _params(params_file)
    d = params.dataset
    spec = SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool, n_val=d.n_val, n_test=d.n_test)
    start = time.time()
    try:
        generate_dataset(spec, out)
    except (FileExistsError, ValueError) as err:
        _fail(str(err))
    console.print(f"generated {d.n_pool + d.n_val + d.n_test} images in {out} ({time.time() - start:.1f} s)")


@app.command()
def pretrain(out: Path = typer.Argument(..., help="working directory: the pretraining set and the training run "
                                         "(resumed if it exists)"),
             params_file: Optional[Path] = typer.Option(None, "--params", help="params.yaml (pretrain + detector)"),
             weights: Optional[Path] = typer.Option(None, help="transfer file to write (default OUT/transfer.pt); "
                                                     "its provenance goes beside it as .json"),
             ) -> None:
    """Make the pretrained start: a generated set disjoint from the built-in one, YOLO trained on it, and the
    backbone + neck as a float16 transfer file that `detector.pretrained` loads (the `mgral-pretrain` flow)."""
    from flows.pretrain import mgral_pretrain
    from mgral_backends.protocol import DetectorError

    params = _params(params_file)
    source = params_file or (Path("params.yaml") if Path("params.yaml").is_file() else None)  # as _params chose
    if params.detector.backend != "ultralytics":
        _fail(f"mgral pretrain trains the ultralytics backend; detector.backend is {params.detector.backend!r}")
    weights = weights or out / "transfer.pt"
    command = "mgral pretrain " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["pretrain"] else f"mgral pretrain {out}"
    start = time.time()
    try:
        record = mgral_pretrain(str(out), str(weights), str(source) if source else None, command)
    except (ValueError, FileExistsError, DetectorError) as err:
        _fail(str(err))
    console.print(f"transfer weights: {weights} ({record['bytes'] / 1e6:.2f} MB, sha256 {record['sha256'][:16]}); "
                  f"pretraining-set val mAP50-95 {record['training']['val_map50_95']:.3f}; "
                  f"{(time.time() - start) / 60:.1f} min in this sitting")
    console.print(f"use it with detector.pretrained: {weights}")


@app.command()
def init(project: Path = typer.Argument(..., help="project directory to create"),
         source: Optional[Path] = typer.Option(None, "--from", help="dataset folder (YOLO, COCO or VOC layout)"),
         fmt: str = typer.Option("auto", "--format", help="yolo | coco | voc | auto"),
         builtin: bool = typer.Option(False, "--builtin", help="use the built-in generated dataset"),
         simulate: bool = typer.Option(False, "--simulate",
                                       help="hide the pool's labels in an oracle (built-in data always simulates)"),
         initial: Optional[int] = typer.Option(None, min=0, help="initially labeled pool images (simulation)"),
         params_file: Optional[Path] = typer.Option(None, "--params", help="params.yaml to copy into the project"),
         unlabeled: Optional[Path] = typer.Option(
             None, "--unlabeled", help="a folder of unlabeled images (searched recursively), with --from or alone; "
             "an image also in the dataset (same content) is imported once, labeled"),
         classes: Optional[str] = typer.Option(
             None, "--classes", help="class names, comma-separated (needed with --unlabeled alone; fixes VOC's "
             "classes and their order)"),
         eval_in_first_batch: bool = typer.Option(
             False, "--eval-in-first-batch", help="carve val/test out of the unlabeled images and label them with "
             "the first batch (annotation.eval_from_unlabeled); for few labels"),
         ) -> None:
    """Create a project from your dataset, a folder of unlabeled images, or the built-in generator."""
    from mgral_formats import add_unlabeled_folder, load_dataset, load_unlabeled_folder
    from mgral_workspace.project import init_from_synthetic, init_project
    from mgral_workspace.synthetic import SyntheticSpec

    params = _params(params_file)
    if builtin and (source is not None or unlabeled is not None or classes is not None):
        _fail("--builtin makes its own dataset; leave out --from, --unlabeled and --classes")
    if not builtin and source is None and unlabeled is None:
        _fail("give --from DIR (a dataset), --unlabeled DIR (a folder of images), both, or --builtin")
    if initial is not None and not (simulate or builtin):
        _fail("--initial sets how many pool images start labeled in a simulation; add --simulate (a project "
              "labeled by people starts with the labels its dataset has)")
    if (simulate or builtin) and (unlabeled is not None or eval_in_first_batch):
        _fail("--unlabeled and --eval-in-first-batch are for projects labeled by people; a simulation needs every "
              "image labeled")
    if source is None and unlabeled is not None and not classes:
        _fail("a project from unlabeled images alone needs its class names: add --classes name1,name2,...")
    if eval_in_first_batch:
        params = params.model_copy(update={"annotation": params.annotation.model_copy(
            update={"eval_from_unlabeled": True})})
    class_names = [c for c in classes.split(",")] if classes else None
    n_initial = initial if initial is not None else params.simulation.initial_labeled
    try:
        if builtin:
            d = params.dataset
            spec = SyntheticSpec(seed=d.seed, image_size=d.image_size, n_pool=d.n_pool, n_val=d.n_val,
                                 n_test=d.n_test)
            with console.status("generating the built-in dataset"):
                init_from_synthetic(project, spec, initial_labeled=n_initial, seed=params.simulation.seed)
        else:
            if source is not None and not source.exists():
                _fail(f"{source}: dataset folder not found")
            if source is None:
                dataset, report = load_unlabeled_folder(unlabeled, class_names)
            else:
                dataset, report = load_dataset(source, fmt, class_names)
                if unlabeled is not None:
                    add_unlabeled_folder(dataset, report, unlabeled)
            try:
                init_project(project, dataset, simulate=simulate, initial_labeled=n_initial, val_fraction=0.1,
                             test_fraction=0.2, seed=params.simulation.seed, report=report,
                             min_eval_images=params.annotation.min_eval_images,
                             eval_from_unlabeled=params.annotation.eval_from_unlabeled)
            finally:  # the counts (labeled / unlabeled / quarantined), problems and carve-out, also on failure
                err_console.print(report.to_text(), markup=False, highlight=False, soft_wrap=True)
    except (OSError, ValueError) as err:  # FileExistsError, PermissionError, a malformed dataset ...
        _fail(str(err))
    _write_project_params(project, params)
    if params.tracking.version_pool:
        from tasks.versioning import VersioningError, ensure_versioned

        try:
            ensure_versioned(project)
        except VersioningError as err:
            _fail(str(err))
    _status(project)


@app.command("import")
def import_(project: Path = typer.Argument(..., help="project directory"),
            source: Optional[Path] = typer.Argument(None, help="Label Studio JSON or JSON-MIN export, COCO JSON, or a "
                                                              "YOLO label folder (a YOLO export with classes.txt too); "
                                                              "or --from-label-studio instead"),
            replace: bool = typer.Option(False, "--replace",
                                         help="relabel images that are already labeled (the previous labels stay "
                                              "in the project's git/DVC history)"),
            from_label_studio: Optional[str] = typer.Option(None, "--from-label-studio", metavar="URL",
                                                            help="fetch the annotations from this Label Studio "
                                                                 "server's API (with --ls-project)"),
            ls_project: Optional[int] = typer.Option(None, "--ls-project", metavar="ID",
                                                     help="the Label Studio project id to fetch"),
            ls_token_file: Optional[Path] = typer.Option(None, "--ls-token-file",
                                                         help="file holding the Label Studio API token "
                                                              "(default: $LABEL_STUDIO_API_KEY)"),
            ) -> None:
    """Import finished annotations for the open batch: all validated first, merged atomically, or nothing.

    The merge and its git/DVC commit happen under the project lock: one commit per import.
    MGRAL_LOCK_WAIT=SECONDS waits for a busy project instead of refusing at once. When the import
    ends the wait for labels (the batch reaches annotation.min_labeled_fraction and no val/test image a
    first detector needs is still out), the Prefect event mgral.batch.labeled is emitted to the server
    in PREFECT_API_URL, if one is set.
    """
    import tempfile

    _check_project(project)
    if (source is None) == (from_label_studio is None):
        _fail("give a SOURCE file or folder, or --from-label-studio URL --ls-project ID (not both)")
    if from_label_studio is not None and ls_project is None:
        _fail("--from-label-studio needs --ls-project ID (the number in the project's Label Studio address)")
    if source is not None and not source.exists():
        _fail(f"{source}: not found")
    with tempfile.TemporaryDirectory(prefix="mgral-ls-") as fetched:
        if from_label_studio is not None:
            source = _fetch_from_label_studio(from_label_studio, ls_project, ls_token_file, Path(fetched))
        _import_source(project, source, replace)


def _label_studio_client(url: str, token_file: Path | None):
    from mgral_workspace.label_studio_api import LabelStudioClient, LabelStudioError, read_token

    try:
        return LabelStudioClient(url, read_token(token_file))
    except LabelStudioError as err:
        _fail(str(err))


def _fetch_from_label_studio(url: str, ls_project: int, token_file: Path | None, out_dir: Path) -> Path:
    from mgral_workspace.label_studio_api import LabelStudioError, pull_export

    client = _label_studio_client(url, token_file)
    try:
        path = pull_export(client, ls_project, out_dir)
    except LabelStudioError as err:
        _fail(str(err))
    console.print(f"fetched the export of Label Studio project {ls_project} from {client.url}")
    return path


def _import_source(project: Path, source: Path, replace: bool) -> None:
    from mgral_workspace.annotation_import import AnnotationImportError, import_annotations
    from mgral_workspace.cycle_steps import labeling_wait, open_batch_progress, wait_ended_by
    from mgral_workspace.project_lock import ProjectLockedError, project_lock
    from tasks.versioning import VersioningError

    params = _params(None, project)
    versioned = params.tracking.version_pool
    keep = None if versioned else project / "replaced_labels" / time.strftime("%Y%m%d-%H%M%S")
    commit = None
    try:
        wait = float(os.environ.get("MGRAL_LOCK_WAIT", "0"))
    except ValueError:
        _fail(f"MGRAL_LOCK_WAIT must be a number of seconds, got {os.environ['MGRAL_LOCK_WAIT']!r}")
    try:
        with project_lock(project, f"mgral import {source.name}", wait_seconds=wait):
            wait_before = labeling_wait(project, params.annotation.min_labeled_fraction)
            summary = import_annotations(project, source, replace=replace, keep_replaced=keep)
            if summary.changed and versioned:
                from tasks.versioning import commit_pool, ensure_versioned

                ensure_versioned(project)
                what = ", ".join(part for part in (
                    f"imported labels for {len(summary.imported)} images" if summary.imported else "",
                    f"replaced labels of {len(summary.replaced)} images" if summary.replaced else "") if part)
                commit = commit_pool(project, f"mgral: {what} from {source.name}")
            wait_ended = wait_ended_by(wait_before, labeling_wait(project, params.annotation.min_labeled_fraction))
            progress = open_batch_progress(project)
    except VersioningError as err:
        _fail(f"the labels were imported, but versioning them failed: {err}")
    except (AnnotationImportError, ProjectLockedError, ValueError, OSError) as err:  # ValueError: PoolStateError
        _fail(str(err))
    for warning in summary.warnings:
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    for note in summary.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"imported labels for {len(summary.imported)} images"
                  + (f"; replaced the labels of {len(summary.replaced)}" if summary.replaced else "")
                  + (f"; {len(summary.unchanged)} already imported, unchanged" if summary.unchanged else "")
                  + (f" (commit {commit[:8]})" if commit else ""))
    if wait_ended:
        _announce_batch_labeled(project, progress)
    _status(project)


def _announce_batch_labeled(project: Path, progress: tuple[int, int, int]) -> None:
    """Emit mgral.batch.labeled (a deployment trigger may start the next cycle); never fails the import."""
    import logging

    from tasks.events import IMPORTED_BY_CLI, emit_batch_labeled

    class _Printer(logging.Handler):
        def emit(self, record):
            err_console.print(record.getMessage(), markup=False, highlight=False, soft_wrap=True)

    logger = logging.getLogger("mgral.events")
    logger.propagate, logger.handlers = False, [_Printer()]
    logger.setLevel(logging.INFO)
    batch, labeled, total = progress
    emit_batch_labeled(project, batch, labeled, total, IMPORTED_BY_CLI, logger, wait=True)


@app.command()
def export(project: Path = typer.Argument(..., help="project directory"),
           to_label_studio: Optional[str] = typer.Option(None, "--to-label-studio", metavar="URL",
                                                         help="hand the batch to this Label Studio server"),
           ls_title: Optional[str] = typer.Option(None, "--ls-title",
                                                  help="Label Studio project title, reused if it exists "
                                                       "(default: 'mgral <project folder name>')"),
           ls_token_file: Optional[Path] = typer.Option(None, "--ls-token-file",
                                                        help="file holding the Label Studio API token "
                                                             "(default: $LABEL_STUDIO_API_KEY)"),
           ls_document_root: Optional[Path] = typer.Option(None, "--ls-document-root",
                                                           help="the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                                                                "(default: the project directory)"),
           cycle_number: Optional[int] = typer.Option(None, "--cycle", min=1,
                                                      help="the batch of this cycle (default: the open batch)"),
           ) -> None:
    """Show the open batch's export folder, or hand the batch to Label Studio through its API.

    With --to-label-studio: creates (or reuses, by title) a Label Studio project with the labeling
    config, connects a Local files storage on PROJECT/images (start Label Studio with
    LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=PROJECT or a
    folder above it) and imports the batch's tasks with the detector's boxes as pre-annotations.
    """
    from mgral_workspace.label_studio_api import LabelStudioError, push_batch

    _check_project(project)
    if to_label_studio is None:
        from mgral_workspace.cycle_steps import open_batch_progress

        batch = cycle_number or open_batch_progress(project)[0]
        folder = project / "exports" / f"cycle_{batch:03d}"
        if not batch or not folder.is_dir():
            _fail(f"{project}: no exported batch{f' for cycle {batch}' if batch else ''}; run `mgral cycle` first")
        console.print(f"batch of cycle {batch}: {folder.resolve()}")
        return
    client = _label_studio_client(to_label_studio, ls_token_file)
    try:
        summary = push_batch(project, client, ls_title, cycle_number, ls_document_root)
    except LabelStudioError as err:
        _fail(str(err))
    console.print(f"Label Studio project {summary.project_id} ({'created' if summary.created_project else 'reused'}): "
                  f"{summary.imported} tasks of batch {summary.cycle} imported with pre-annotations"
                  + (f", {summary.already_there} already there" if summary.already_there else "")
                  + f"; local-files storage {summary.storage_id}")
    console.print(f"label them at {summary.project_url}, then: mgral import {project} --from-label-studio "
                  f"{client.url} --ls-project {summary.project_id}")


@app.command()
def cycle(project: Path = typer.Argument(..., help="project directory"),
          strategy: Optional[str] = typer.Option(None, help="selection strategy (default: params)"),
          budget: Optional[int] = typer.Option(None, help="images to select (default: params)"),
          ) -> None:
    """Run one active-learning cycle (the `mgral` Prefect flow)."""
    _check_project(project, _overrides(strategy=strategy, budget=budget))  # before the flow's heavy imports
    from flows.cycle import mgral_cycle

    result = _run_flow(mgral_cycle, project_dir=str(project), strategy=strategy, budget=budget)
    if result["status"] == "waiting":
        console.print(result["message"], markup=False, highlight=False)
        return
    if result.get("cold_start"):
        console.print(f"cycle {result['cycle']}: {result['reason']}; with them {len(result['eval_to_label'])} "
                      f"val/test images to label. No detector is trained until they come back "
                      f"({'; '.join(result['waiting_for'])}); MLflow run {result['run_id']}", markup=False,
                      highlight=False)
    else:
        console.print(f"cycle {result['cycle']}: test mAP50-95 {result['map50_95']:.4f} with {result['labeled']} "
                      f"labeled; selected {len(result['selected'])} images; MLflow run {result['run_id']}")
    _print_runs_page(project, result["run_id"])
    if result.get("registered"):
        registered = result["registered"]
        console.print(f"detector registered as {registered['uri']} ({', '.join(registered['aliases'])}); "
                      f"load it with mlflow.pyfunc.load_model('models:/{registered['name']}@champion')",
                      markup=False, highlight=False)
    for warning in result.get("warnings", []):
        err_console.print(f"WARNING: {warning}", markup=False, highlight=False, soft_wrap=True)
    if result.get("export"):
        console.print(f"batch exported for annotation: {result['export']}", markup=False, highlight=False)


@app.command()
def campaign(project: Path = typer.Argument(..., help="project directory (simulation)"),
             cycles: Optional[int] = typer.Option(None, help="number of selection cycles (default: params)"),
             strategy: Optional[str] = typer.Option(None, help="selection strategy (default: params)"),
             budget: Optional[int] = typer.Option(None, help="images per cycle (default: params)"),
             reports: Optional[Path] = typer.Option(None, help="where metrics.json and plots go"),
             ) -> None:
    """Run a simulated campaign of several cycles (the `mgral-campaign` Prefect flow)."""
    from mgral_workspace.project import load_project_info

    _check_project(project, _overrides(strategy=strategy, budget=budget, cycles=cycles))
    if not load_project_info(project).simulate:
        _fail(f"{project}: a campaign runs simulated cycles (an oracle labels each batch), but this project is "
              "labeled by people; run `mgral cycle` once per batch instead")
    from flows.campaign import mgral_campaign  # after the checks: the flow's imports take seconds
    result = _run_flow(mgral_campaign, project_dir=str(project), cycles=cycles, strategy=strategy,
                       budget=budget, reports_dir=str(reports) if reports else None)
    _print_campaign(project, result)


@app.command()
def demo(out: Path = typer.Option(Path("projects/demo"), help="project directory to create"),
         params_file: Optional[Path] = typer.Option(None, "--params", help="parameters (default: ./params.yaml)"),
         cycles: int = typer.Option(2, min=1, help="selection cycles (then a final train-and-evaluate); "
                                    "2 keeps the demo within 15 minutes on a 2-core CPU"),
         diagnostics: bool = typer.Option(False, "--diagnostics/--no-diagnostics",
                                          help="also measure the lookup table's repeatability and fidelity and "
                                               "the reward chain every cycle (lookup_table.diagnostics; about 1.5 "
                                               "min more per cycle, plus two records per diverse batch)"),
         ) -> None:
    """The main job: built-in dataset -> project -> a short MGRAL campaign; prints where results are."""
    from flows.campaign import mgral_campaign

    start = time.time()
    if out.exists() and any(out.iterdir()):
        _fail(f"{out} already exists; remove it or pass --out elsewhere")
    init(out, None, "auto", True, True, None, params_file, unlabeled=None, classes=None, eval_in_first_batch=False)
    params = _params(out / "params.yaml")
    if params.lookup_table.diagnostics != diagnostics:
        _write_project_params(out, params.model_copy(update={"lookup_table": params.lookup_table.model_copy(
            update={"diagnostics": diagnostics})}))
    result = _run_flow(mgral_campaign, project_dir=str(out), cycles=cycles)
    _print_campaign(out, result)
    console.print(f"demo finished in {(time.time() - start) / 60:.1f} minutes")


@app.command()
def simulate(dataset: Path = typer.Argument(..., help="a generated dataset (mgral generate) or any YOLO/COCO/VOC one"),
             project: Path = typer.Argument(..., help="project directory to create (replaced if it exists)"),
             params_file: Path = typer.Option(Path("params.yaml"), "--params", help="parameters"),
             reports: Path = typer.Option(Path("reports"), help="where metrics.json and the learning curve go"),
             ) -> None:
    """Create a fresh simulation project from DATASET and run a campaign (the DVC `simulate` stage)."""
    import shutil

    from flows.campaign import mgral_campaign
    from mgral_formats import load_dataset
    from mgral_workspace.project import init_project

    params = _params(params_file)
    params = params.model_copy(update={"tracking": params.tracking.model_copy(update={"version_pool": False})})
    if project.exists() and not (project.is_dir() and (not any(project.iterdir()) or (project / "pool.csv").exists())):
        _fail(f"{project}: exists and is not an MGRAL project; simulate replaces only a project it can recognise "
              "(give a new folder)")
    try:
        loaded, report = load_dataset(dataset, "auto")  # before anything is replaced
        metadata = dataset / "metadata.csv"
        if project.exists():
            shutil.rmtree(project)
        init_project(project, loaded, simulate=True, initial_labeled=params.simulation.initial_labeled,
                     val_fraction=0.1, test_fraction=0.2, seed=params.simulation.seed, report=report,
                     metadata=pd_read(metadata) if metadata.exists() else None)
    except (OSError, ValueError) as err:
        _fail(str(err))
    _write_project_params(project, params)
    result = _run_flow(mgral_campaign, project_dir=str(project), params_file=str(project / "params.yaml"),
                       reports_dir=str(reports))
    _print_campaign(project, result)


def pd_read(path: Path):
    import pandas as pd

    return pd.read_csv(path, dtype={"image_id": str})


@app.command()
def benchmark(out: Optional[Path] = typer.Option(None, help="output directory, resumed if it exists "
                                                   "(default benchmark_results/PROFILE)"),
              profile: str = typer.Option("quick", help="quick | ablation | full (params.yaml: benchmark.*)"),
              params_file: Path = typer.Option(Path("params.yaml"), "--params", help="parameters"),
              strategies: Optional[str] = typer.Option(None, help="comma-separated subset of strategies; a spec's own overrides follow it: mgral@lookup_table.batch_sampling=designed,agent.final_choice=best_estimate"),
              seeds: Optional[str] = typer.Option(None, help="comma-separated seeds"),
              allow_code_change: bool = typer.Option(False, help="resume results made by another code version "
                                                     "(same settings; each result cell records its code version)"),
              ) -> None:
    """Compare strategies x seeds x cycles in simulation (the `mgral-benchmark` Prefect flow).

    Re-running the same command resumes: finished (strategy, seed, cycle) results are reused, an
    interrupted cycle restarts; results made with other settings are refused, never reused.
    """
    from flows.benchmark import mgral_benchmark
    from mgral_workspace.benchmark import check_benchmark
    from mgral_workspace.config import PROFILES, split_strategy_list
    from mgral_workspace.project_lock import ProjectLockedError, project_lock

    if profile not in PROFILES:
        _fail(f"--profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    out = out or Path("benchmark_results") / profile
    params = _params(params_file)
    chosen = getattr(params.benchmark, profile)
    if seeds and not all(s.strip().isdigit() for s in seeds.split(",")):
        _fail(f"--seeds takes comma-separated non-negative integers (0,1,2), got {seeds!r}")
    try:
        strategy_list = split_strategy_list(strategies) if strategies else chosen.strategies
        seed_list = [int(s) for s in seeds.split(",")] if seeds else chosen.seeds
        out.mkdir(parents=True, exist_ok=True)
        with project_lock(out, f"mgral benchmark --profile {profile}"):  # refuse early, without a traceback
            check_benchmark(out.resolve(), params, chosen, strategy_list, seed_list, allow_code_change)
            summary = mgral_benchmark(str(out), profile, str(params_file), strategy_list, seed_list, allow_code_change)
    except (ValueError, OSError, ProjectLockedError) as err:
        _fail(str(err))
    console.print((out / "auc.md").read_text(), markup=False, highlight=False)  # intervals look like [a, b]
    for key in ("results", "learning_curves", "auc"):
        console.print(f"{key:16s}: {summary[key]}")
    _print_benchmark_runs(out.resolve(), chosen.apply(params, seed_list[0], out.resolve()))


def _print_benchmark_runs(out: Path, run_params) -> None:
    """Where the benchmark's campaign runs are in the MLflow UI, grouped by their strategy tag."""
    from tasks.tracking import runs_page, tracking_uri

    uri = tracking_uri(out, run_params)
    console.print(f"{'open the UI':16s}: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"{'then the runs':16s}: {runs_page(out, run_params)} (group them by the strategy tag)",
                  markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(project: Path = typer.Argument(..., help="project directory the deployment runs on"),
          cron: Optional[str] = typer.Option(None, help="cron schedule, e.g. '0 6 * * *'"),
          strategy: Optional[str] = typer.Option(None, help="default strategy parameter"),
          budget: Optional[int] = typer.Option(None, help="default budget parameter"),
          ) -> None:
    """Serve the `mgral/cycle` Prefect deployment (needs PREFECT_API_URL to reach a server)."""
    _check_project(project, _overrides(strategy=strategy, budget=budget))  # before the flow's heavy imports
    from deployments.serve import serve_cycle

    serve_cycle(str(project), cron, strategy, budget)


@app.command()
def status(project: Path = typer.Argument(..., help="project directory")) -> None:
    """Show the cycle, labeled / unlabeled / pending counts and the last results."""
    from mgral_workspace.pool_summary import read_summary

    summary = read_summary(project)  # pool.csv unchanged since its last save: no need to parse it (or import pandas)
    if summary is None:
        _, pool = _open_project(project)
        summary = pool.summary()
    else:
        _open_project(project, read_pool=False)  # project.yaml and params.yaml are still checked
    _status(project, summary)


def _status(project: Path, summary: dict | None = None) -> None:
    """Print the project's status from its pool summary (`PoolState.summary`; if not given, the saved one while it
    matches pool.csv, else pool.csv's)."""
    import json

    from mgral_workspace.cycle_report import latest_cycle_report
    from mgral_workspace.pool_summary import COUNTS, read_summary
    from mgral_workspace.project_info import load_project_info

    summary = summary or read_summary(project)
    if summary is None:
        from mgral_workspace.pool import PoolState

        summary = PoolState.load(project).summary()
    table = Table(title=f"MGRAL project {project}")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("cycle", str(summary["cycle"]))
    for key in COUNTS:
        table.add_row(key, str(summary["counts"][key]))
    if summary["eval_to_label"]:
        table.add_row("val/test to label", str(summary["eval_to_label"]))
    batch = summary["open_batch"]
    if batch["total"]:
        table.add_row("last batch", f"batch {batch['cycle']}: {batch['labeled']}/{batch['total']} labeled")
    report = latest_cycle_report(project)
    if report and report.get("selection"):
        table.add_row(f"cycle {report['cycle']} selection", escape(report["selection"]))
    evaluations = sorted(project.glob("cycles/cycle_*/evaluation.json"))
    if evaluations:
        last = json.loads(evaluations[-1].read_text())
        table.add_row("last test mAP50-95", f"{last['map50_95']:.4f} ({last['labeled']} labeled, cycle {last['cycle']})")
    exports = sorted(project.glob("exports/cycle_*"))
    if exports:
        table.add_row("last export", str(exports[-1]))
    console.print(table)
    gaps = summary["training_gaps"]
    if gaps and not load_project_info(project).simulate:
        console.print(f"before a detector can train: {'; '.join(gaps)}", markup=False, highlight=False)
    for warning in (report or {}).get("warnings", []):
        console.print(f"WARNING (cycle {report['cycle']}): {warning}", markup=False, highlight=False, soft_wrap=True)


def _check_project(project: Path, overrides: dict | None = None):
    """Refuse at once, before any flow starts, a folder that is not a readable project: its project.yaml,
    pool.csv and params.yaml (with `overrides` such as {"selection.budget": -3}) must load. Returns the
    project's parameters."""
    return _open_project(project, overrides)[0]


def _open_project(project: Path, overrides: dict | None = None, read_pool: bool = True):
    """`_check_project`'s checks; returns the project's parameters and the pool state they loaded (None
    without `read_pool`: then pool.csv must exist but is not parsed)."""
    from mgral_workspace.config import ConfigError, Params, load_params
    from mgral_workspace.project_info import load_project_info

    if not project.is_dir():
        _fail(f"{project}: not an MGRAL project (no such folder); create one with `mgral init`")
    if not (project / "pool.csv").exists():
        _fail(f"{project}: not an MGRAL project (no pool.csv); create one with `mgral init`")
    try:
        load_project_info(project)
        pool = None
        if read_pool:
            from mgral_workspace.pool import PoolState

            pool = PoolState.load(project)
        params_file = project / "params.yaml"
        return (load_params(params_file, overrides) if params_file.exists() or overrides else Params()), pool
    except (ConfigError, OSError, ValueError) as err:  # ProjectFileError, PoolStateError are ValueErrors
        _fail(str(err))


def _overrides(**values) -> dict:
    """Command-line values as params.yaml keys (None = not given), validated with the project's params."""
    keys = {"strategy": "selection.strategy", "budget": "selection.budget", "cycles": "campaign.cycles"}
    return {keys[k]: v for k, v in values.items() if v is not None}


def _run_flow(flow_fn, **kwargs):
    from mgral_workspace.config import ConfigError
    from mgral_backends.ultralytics.detector import DetectorError
    from mgral_workspace.pool import PoolStateError
    from mgral_workspace.project_lock import ProjectLockedError

    from mgral_workspace.project_lock import project_lock

    try:
        with project_lock(kwargs["project_dir"], f"mgral {flow_fn.name}"):  # refuse early, without a traceback
            return flow_fn(**kwargs)
    except (ConfigError, PoolStateError, DetectorError, ProjectLockedError, OSError, KeyError,
            ValueError) as err:
        _fail(str(err))


def _print_runs_page(project: Path, run_id: str) -> None:
    """Where the cycle's run is in the MLflow UI (once `mlflow ui` serves the project's store)."""
    from tasks.tracking import runs_page, tracking_uri
    from mgral_workspace.config import load_params

    params = load_params(project / "params.yaml")
    uri = tracking_uri(project, params)
    served = "" if uri.startswith(("http://", "https://")) else (
        f" (after mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000)")
    console.print(f"in the MLflow UI: {runs_page(project, params, run_id)}{served}", markup=False, highlight=False,
                  soft_wrap=True)


def _print_campaign(project: Path, result: dict) -> None:
    from tasks.tracking import runs_page, tracking_uri
    from mgral_workspace.config import load_params

    params = load_params(project / "params.yaml")
    uri = tracking_uri(project, params)
    table = Table(title=f"campaign: {result['strategy']}")
    for column in ("cycle", "labeled", "test mAP50-95", "test mAP50"):
        table.add_column(column, justify="right")
    for p in result["points"]:
        table.add_row(str(p["cycle"]), str(p["labeled"]), f"{p['map50_95']:.4f}", f"{p['map50']:.4f}")
    console.print(table)
    console.print(f"learning curve : {result['learning_curve_png']}")
    console.print(f"metrics        : {result['reports_dir']}/metrics.json")
    console.print(f"selected ids   : {project}/cycles/cycle_*/selection.json")
    console.print(f"MLflow         : parent run {result['mlflow_parent_run']} in {uri}")
    console.print(f"open the UI    : mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    console.print(f"then the runs  : {runs_page(project, params)} (group or compare them by the strategy tag)",
                  markup=False, highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
