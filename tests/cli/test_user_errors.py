"""No user error ends in a traceback: every command over a catalogue of bad inputs exits 2 with a line
starting `error:` naming what is wrong (docs/RELIABILITY.md, "CLI user errors")."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mgral_cli.main import app
from mgral_formats import load_dataset
from mgral_workspace.project import init_project
from tests.conftest import REPO

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _dataset(root: Path, labeled: int = 5, unlabeled: int = 3) -> Path:
    """A small YOLO dataset: pool images (`labeled` with a label file), one val and one test image."""
    rows = [("train", f"t{i}", i < labeled) for i in range(labeled + unlabeled)] + [("val", "v0", True),
                                                                                    ("test", "s0", True)]
    for split, name, has_label in rows:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (len(name) * 30, 90, 90)).save(root / "images" / split / f"{name}.png")
        if has_label:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("names: [a, b]\ntrain: images/train\nval: images/val\ntest: images/test\n")
    return root


def _params_file(path: Path, **changes) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["tracking"]["version_pool"] = False
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        data[section][key] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A dataset and a real-labeling project made from it, copied by each case."""
    root = tmp_path_factory.mktemp("cli")
    data = _dataset(root / "ds")
    dataset, report = load_dataset(data)
    init_project(root / "project", dataset, simulate=False, initial_labeled=0, report=report)
    _params_file(root / "project" / "params.yaml")
    return root


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _replace_with_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


# (case id, setup(root), argv with {root} / {p} / {ds} placeholders, what the error line must say)
CASES = [
    # creating a project
    ("init: missing dataset folder", None, "init {root}/new --from {root}/nowhere", "dataset folder not found"),
    ("init: unknown format", None, "init {root}/new --from {ds} --format xml", "unknown format 'xml'"),
    ("init: no source", None, "init {root}/new", "give --from DIR"),
    ("init: --builtin and --from", None, "init {root}/new --builtin --from {ds}", "--builtin makes its own dataset"),
    ("init: a file that is no dataset", lambda r: _write(r / "notes.txt", "x"), "init {root}/new --from {root}/notes.txt",
     "cannot tell the layout"),
    ("init: malformed data.yaml", lambda r: _write(r / "ds/data.yaml", "names: [a, b\n"), "init {root}/new --from {ds}",
     "data.yaml: not valid YAML"),
    ("init: alias bomb as data.yaml", lambda r: _write(r / "ds/data.yaml", ALIAS_BOMB), "init {root}/new --from {ds}",
     "aliases (*name) are not allowed"),
    ("init: data.yaml is a folder", lambda r: _replace_with_dir(r / "ds/data.yaml"), "init {root}/new --from {ds}",
     "data.yaml: cannot be read"),
    ("init: a lone JSON that is not COCO", lambda r: _write(r / "x.json", "[1, 2]"), "init {root}/new --from {root}/x.json",
     "not a COCO document"),
    ("init: no usable image", lambda r: [_write(p, b"broken") for p in (r / "ds/images").rglob("*.png")],
     "init {root}/new --from {ds}", "the dataset has no usable image"),
    ("init: --initial without --simulate", None, "init {root}/new --from {ds} --initial 5",
     "--initial sets how many pool images"),
    ("init: negative --initial", None, "init {root}/new --from {ds} --initial -3",
     "Invalid value for '--initial': Input should be greater than or equal to 0"),
    ("init: project folder not empty", None, "init {p} --from {ds}", "already exists and is not empty"),
    ("init: project path is a file", lambda r: _write(r / "afile", "x"), "init {root}/afile --from {ds}",
     "exists and is not a folder"),
    ("init: missing params file", None, "init {root}/new --from {ds} --params {root}/none.yaml",
     "parameter file not found"),
    ("init: UTF-16 params", lambda r: _write(r / "u16.yaml", "selection:\n  budget: 5\n".encode("utf-16")),
     "init {root}/new --from {ds} --params {root}/u16.yaml", "not UTF-8 text"),
    ("init: params is a folder", lambda r: (r / "pdir.yaml").mkdir(), "init {root}/new --from {ds} --params {root}/pdir.yaml",
     "not a file"),
    ("init: alias bomb as params", lambda r: _write(r / "bomb.yaml", ALIAS_BOMB),
     "init {root}/new --from {ds} --params {root}/bomb.yaml", "aliases (*name) are not allowed"),
    ("init: unknown strategy in params", lambda r: _params_file(r / "s.yaml", **{"selection.strategy": "entropy"}),
     "init {root}/new --from {ds} --params {root}/s.yaml", "unknown strategy 'entropy'"),
    ("init: negative budget in params", lambda r: _params_file(r / "b.yaml", **{"selection.budget": -4}),
     "init {root}/new --from {ds} --params {root}/b.yaml", "selection.budget: Input should be greater than or equal to 1"),
    ("init: negative seed in params", lambda r: _params_file(r / "n.yaml", **{"simulation.seed": -1}),
     "init {root}/new --from {ds} --params {root}/n.yaml", "simulation.seed: Input should be greater than or equal to 0"),
    ("init: missing --unlabeled folder", None, "init {root}/new --unlabeled {root}/nowhere --classes a",
     "folder of unlabeled images not found"),
    ("init: --unlabeled folder without images", lambda r: (r / "empty").mkdir(),
     "init {root}/new --unlabeled {root}/empty --classes a", "no image file found"),
    ("init: --unlabeled alone without --classes", None, "init {root}/new --unlabeled {ds}/images",
     "needs its class names: add --classes"),
    ("init: --unlabeled in a simulation", None, "init {root}/new --from {ds} --unlabeled {ds}/images --simulate",
     "a simulation needs every image labeled"),
    ("init: duplicate --classes", None, "init {root}/new --unlabeled {ds}/images --classes a,a",
     "class names must be unique"),
    ("init: --classes disagreeing with data.yaml", None, "init {root}/new --from {ds} --classes x,y",
     "--classes gives ['x', 'y']"),
    # an existing project, damaged
    ("cycle: missing project", None, "cycle {root}/nowhere", "not an MGRAL project (no such folder)"),
    ("cycle: a folder that is no project", lambda r: (r / "plain").mkdir(), "cycle {root}/plain", "no pool.csv"),
    ("cycle: damaged project.yaml", lambda r: _write(r / "project/project.yaml", "class_names: [a\n"), "cycle {p}",
     "project.yaml: cannot be read"),
    ("cycle: project.yaml without class names", lambda r: _write(r / "project/project.yaml", "simulate: false\n"),
     "cycle {p}", "'class_names' must be a non-empty list"),
    ("cycle: empty pool.csv", lambda r: _write(r / "project/pool.csv", ""), "cycle {p}", "not a readable pool table"),
    ("cycle: pool.csv cell 'maybe'", lambda r: _write(r / "project/pool.csv", (r / "project/pool.csv").read_text()
                                                      .replace(",True,", ",maybe,", 1)),
     "cycle {p}", "'maybe' is not True or False"),
    ("cycle: pool.csv is a folder", lambda r: _replace_with_dir(r / "project/pool.csv"), "cycle {p}",
     "not a readable pool table"),
    ("cycle: UTF-16 params.yaml", lambda r: _write(r / "project/params.yaml", "a: 1\n".encode("utf-16")), "cycle {p}",
     "not UTF-8 text"),
    ("cycle: params.yaml is a folder", lambda r: _replace_with_dir(r / "project/params.yaml"), "cycle {p}", "not a file"),
    ("cycle: alias bomb as params.yaml", lambda r: _write(r / "project/params.yaml", ALIAS_BOMB), "cycle {p}",
     "aliases (*name) are not allowed"),
    ("cycle: unknown strategy", None, "cycle {p} --strategy entropy", "unknown strategy 'entropy'; known strategies"),
    ("cycle: negative budget", None, "cycle {p} --budget -3",
     "selection.budget: Input should be greater than or equal to 1 (got -3)"),
    ("cycle: budget not a number", None, "cycle {p} --budget many", "Invalid value for '--budget'"),
    ("status: missing project", None, "status {root}/nowhere", "not an MGRAL project"),
    ("status: damaged project.yaml", lambda r: _write(r / "project/project.yaml", ": : :\n"), "status {p}",
     "project.yaml: cannot be read"),
    ("status: empty pool.csv", lambda r: _write(r / "project/pool.csv", ""), "status {p}", "not a readable pool table"),
    ("status: pool.csv width not a number", lambda r: _write(r / "project/pool.csv", (r / "project/pool.csv")
                                                             .read_text().replace(",32,", ",wide,", 1)),
     "status {p}", "is not an integer"),
    ("import: missing project", None, "import {root}/nowhere {root}/x.json", "not an MGRAL project"),
    ("import: missing export", None, "import {p} {root}/none.json", "none.json: not found"),
    ("import: export that is not JSON", lambda r: _write(r / "bad.json", "{not json"), "import {p} {root}/bad.json",
     "cannot read as JSON"),
    ("import: damaged project.yaml", lambda r: (_write(r / "project/project.yaml", "[1, 2]\n"),
                                                _write(r / "e.json", "[]")),
     "import {p} {root}/e.json", "expected a mapping with class_names"),
    ("campaign: a project labeled by people", None, "campaign {p}", "a campaign runs simulated cycles"),
    ("campaign: zero cycles", None, "campaign {p} --cycles 0", "campaign.cycles: Input should be greater than or equal to 1"),
    ("serve: missing project", None, "serve {root}/nowhere", "not an MGRAL project"),
    ("generate: into a folder that is not empty", None, "generate {ds}", "already exists and is not empty"),
    ("generate: bad params", lambda r: _params_file(r / "g.yaml", **{"dataset.n_pool": 1}),
     "generate {root}/gen --params {root}/g.yaml", "dataset.n_pool"),
    ("simulate: missing dataset", None, "simulate {root}/nowhere {root}/sim --params {p}/params.yaml",
     "dataset not found"),
    ("simulate: would replace a folder that is no project", lambda r: _write(r / "keep/mine.txt", "precious"),
     "simulate {ds} {root}/keep --params {p}/params.yaml", "exists and is not an MGRAL project"),
    ("benchmark: unknown profile", None, "benchmark --profile huge --params {p}/params.yaml", "--profile must be one of"),
    ("benchmark: seeds that are not numbers", None, "benchmark --seeds a,b --params {p}/params.yaml",
     "--seeds takes comma-separated non-negative integers"),
    ("demo: output folder exists", None, "demo --out {ds}", "already exists"),
    ("unknown command", None, "train {p}", "No such command 'train'"),
    ("missing argument", None, "status", "Missing argument 'project'"),
]


@pytest.mark.parametrize(("setup", "argv", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_user_error_is_one_error_line_and_exit_code_2(template, tmp_path, monkeypatch, setup, argv, message):
    root = tmp_path / "case"
    shutil.copytree(template, root, symlinks=True)
    if setup is not None:
        setup(root)
    monkeypatch.chdir(root)  # no working-directory params.yaml of the repository
    args = argv.format(root=root, p=root / "project", ds=root / "ds").split()
    before = _files(root)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, (result.exception, result.output)
    assert any(line.startswith("error: ") for line in result.output.splitlines()), result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert _files(root) == before  # nothing made, changed or removed (simulate's folder kept)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))
            if p.name != ".mgral.lock"}


def test_the_catalogue_in_a_real_process(template, tmp_path):
    """The installed command's own streams: a few cases end to end in a subprocess."""
    root = tmp_path / "case"
    shutil.copytree(template, root, symlinks=True)
    _write(root / "project/pool.csv", "")
    cases = [(["status", str(root / "project")], "not a readable pool table"),
             (["cycle", str(root / "nowhere")], "not an MGRAL project"),
             (["init", str(root / "new"), "--unlabeled", str(root / "nowhere"), "--classes", "a"],
              "folder of unlabeled images not found"),
             (["init"], "Missing argument 'project'")]
    for args, message in cases:
        run = subprocess.run([sys.executable, "-m", "mgral_cli.main", *args], capture_output=True, text=True,
                             timeout=120, cwd=root)
        assert run.returncode == 2, run.stderr
        assert any(line.startswith("error: ") for line in run.stderr.splitlines()), run.stderr
        assert message in " ".join(run.stderr.split()) and "Traceback" not in run.stderr + run.stdout
