"""The pure core (mgral_core) imports no layer above it: checked on the import graph of every module."""

import ast
from pathlib import Path

# Packages the pure core may never import: orchestration and tracking, the detector backend, and the
# project's own outer layers (workspace with the config's Params, formats, backends, tasks, flows, CLI).
FORBIDDEN = {"prefect", "mlflow", "dvc", "ultralytics", "mgral_workspace", "mgral_formats", "mgral_backends",
             "tasks", "flows", "mgral_cli", "deployments"}


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at any depth of the file (function-local imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_pure_core_imports_no_outer_layer():
    files = list(Path("mgral_core").rglob("*.py"))
    assert len(files) > 10, "mgral_core not found: run tests from the repo root"
    offenders = [f"{path}: {name}" for path in files for name in imported_modules(path)
                 if name.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_pure_core_never_names_params():
    """Core functions take small typed configs, never the whole Params of params.yaml."""
    offenders = [str(path) for path in Path("mgral_core").rglob("*.py")
                 if any(isinstance(node, ast.Name) and node.id == "Params" for node in ast.walk(ast.parse(path.read_text())))]
    assert offenders == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mgral_workspace.config import Params\n    import prefect\n")
    assert [n.split(".")[0] for n in imported_modules(bad)] == ["mgral_workspace", "prefect"]
