"""mgral_core stays free of orchestration and tracking imports."""

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "dvc"}


def test_core_imports_no_orchestration():
    offenders = []
    for path in Path("mgral_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    assert list(Path("mgral_core").rglob("*.py")), "mgral_core not found: run tests from the repo root"
    assert offenders == []
