"""Every dependency is pinned: ours in pyproject.toml and requirements.lock, Label Studio's in its own lock.

Unpinned, Label Studio 1.23.2 took sentry-sdk 3.0.0 the day it was released and stopped starting.
"""

import re
import tomllib

import pytest

from tests.conftest import REPO

PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")


def _requirement_lines(path):
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def test_pyproject_dependencies_are_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert requirements and [r for r in requirements if not PIN.match(r)] == []


@pytest.mark.parametrize("lock", ["requirements.lock", "scripts/label_studio_requirements.txt"])
def test_lock_files_pin_every_package(lock):
    lines = _requirement_lines(REPO / lock)
    assert len(lines) > 20, f"{lock}: expected the full resolved set, found {len(lines)} lines"
    assert [line for line in lines if not PIN.match(line)] == []
    names = [re.split(r"[\[=]", line)[0].lower().replace("_", "-") for line in lines]
    assert len(names) == len(set(names)), f"{lock}: a package is pinned twice"


def test_label_studio_lock_holds_the_version_that_starts():
    lines = _requirement_lines(REPO / "scripts" / "label_studio_requirements.txt")
    assert "label-studio==1.23.2" in lines
    sentry = next(line for line in lines if line.startswith("sentry-sdk=="))
    assert int(sentry.split("==")[1].split(".")[0]) < 3, "sentry-sdk 3 breaks Label Studio 1.23.2's settings"
