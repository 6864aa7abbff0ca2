"""docs/RELIABILITY.md names a test on every row of its tables, and every test it names exists."""

import ast
import functools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RELIABILITY.md"
SAME = re.compile(r"^same tests?\b")


def table_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every body row of every table whose last header column is 'test'."""
    rows, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        header = lines[i]
        if header.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s|:-]+\|$", lines[i + 1]):
            tested = header.strip("|").split("|")[-1].strip() == "test"
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                if tested:
                    rows.append((i + 1, [c.strip() for c in lines[i].strip().strip("|").split("|")]))
                i += 1
            continue
        i += 1
    return rows


def named_tests(cell: str) -> list[str]:
    """`path.py` or `path.py::test_name` references in a cell (backticked)."""
    return [ref for ref in re.findall(r"`([^`]+)`", cell) if re.search(r"\.py(::|$)", ref)]


def resolve(ref: str) -> tuple[Path | None, str | None]:
    """The test file a reference names (a path under the repo, or a file name found once under tests/)."""
    path, _, name = ref.partition("::")
    candidates = [REPO / path] if (REPO / path).exists() else list((REPO / "tests").rglob(Path(path).name))
    return (candidates[0] if len(candidates) == 1 else None), (name.split("[")[0] or None)


@functools.lru_cache(maxsize=None)
def defined_tests(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_every_row_names_a_test_that_exists():
    rows = table_rows(DOC.read_text())
    assert len(rows) >= 60, f"only {len(rows)} rows with a test column"
    problems, previous_has_test = [], False
    for line, cells in rows:
        cell = cells[-1]
        refs = named_tests(cell)
        if not refs and not (SAME.match(cell) and previous_has_test):
            problems.append(f"line {line}: no test named in {cell!r}")
        for ref in refs:
            path, name = resolve(ref)
            if path is None:
                problems.append(f"line {line}: {ref}: no such test file")
            elif name is not None and name not in defined_tests(path):
                problems.append(f"line {line}: {ref}: no test {name} in {path.relative_to(REPO)}")
        previous_has_test = bool(refs) or (SAME.match(cell) is not None and previous_has_test)
    assert problems == []


def test_the_check_itself_catches_a_missing_test(tmp_path):
    text = ("| a | b | test |\n|---|---|---|\n| x | y | `tests/test_layers.py::test_no_such_thing` |\n"
            "| x | y | same test |\n| x | y | nothing here |\n")
    rows = table_rows(text)
    assert [cells[-1] for _, cells in rows] == ["`tests/test_layers.py::test_no_such_thing`", "same test",
                                                "nothing here"]
    path, name = resolve(named_tests(rows[0][1][-1])[0])
    assert path == REPO / "tests" / "test_layers.py" and name not in defined_tests(path)
    assert named_tests("nothing here") == []
