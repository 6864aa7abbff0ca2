"""The layers of the house (docs/ARCHITECTURE.md), checked on the import graph of every module."""

import ast
from pathlib import Path

PACKAGES = ("mgral_core", "mgral_formats", "mgral_backends", "mgral_workspace", "tasks", "flows", "mgral_cli",
            "deployments")
BELOW_TASKS = ("mgral_core", "mgral_formats", "mgral_backends", "mgral_workspace")


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> list[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def project_files() -> list[Path]:
    files = [p for package in PACKAGES for p in Path(package).rglob("*.py")]
    assert len(files) > 40, "run the tests from the repository root"
    return files


def test_only_tasks_tracking_imports_mlflow():
    offenders = [str(p) for p in project_files() if any(n.split(".")[0] == "mlflow" for n in imports(p))
                 and p != Path("tasks/tracking.py")]
    assert offenders == []


def test_lower_layers_never_import_tasks_flows_or_the_cli():
    offenders = [f"{p}: {n}" for p in project_files() if p.parts[0] in BELOW_TASKS
                 for n in imports(p) if n.split(".")[0] in ("tasks", "flows", "mgral_cli", "deployments", "prefect")]
    assert offenders == []


def test_flows_hold_no_maths_and_no_file_work():
    banned = {"numpy", "pandas", "torch", "shutil", "csv", "json", "yaml"}
    offenders = [f"{p}: {n}" for p in Path("flows").rglob("*.py") for n in imports(p) if n.split(".")[0] in banned]
    assert offenders == []


def test_module_imports_form_no_cycle():
    files = project_files()
    known = {module_name(p) for p in files}
    graph = {module_name(p): {n for n in imports(p, top_level_only=True) if n in known and n != module_name(p)}
             for p in files}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (found := visit(nxt, trail + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            assert visit(start, []) is None
