"""A project's project.yaml: its class names and whether it is a simulation, and where its folders are.

Apart from mgral_workspace.project (which creates projects, and re-exports these names) so that reading
it imports no image or format library: `mgral status` answers sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class ProjectInfo:
    root: Path
    class_names: tuple[str, ...]
    simulate: bool

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    @property
    def oracle_dir(self) -> Path:
        return self.root / "oracle" / "labels"

    @property
    def cycles_dir(self) -> Path:
        return self.root / "cycles"


class ProjectFileError(ValueError):
    """project.yaml is unreadable or lacks what a project needs; the message names the file and the key."""


def load_project_info(project_dir: str | Path) -> ProjectInfo:
    """project.yaml's class names and simulate flag.

    Raises:
        FileNotFoundError: no project.yaml (not a project).
        ProjectFileError: project.yaml is not a readable YAML mapping with `class_names` (a list of
            text) and `simulate` (true or false).
    """
    path = Path(project_dir) / "project.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not an MGRAL project; create one with `mgral init`")
    restore = "restore it from the project's history (git checkout project.yaml)"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ProjectFileError(f"{path}: cannot be read ({type(err).__name__}: {str(err)[:200]}); {restore}") from None
    if not isinstance(data, dict):
        raise ProjectFileError(f"{path}: expected a mapping with class_names and simulate; {restore}")
    names, simulate = data.get("class_names"), data.get("simulate")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ProjectFileError(f"{path}: 'class_names' must be a non-empty list of names, got {names!r:.200}; "
                               f"{restore}")
    if not isinstance(simulate, bool):
        raise ProjectFileError(f"{path}: 'simulate' must be true or false, got {simulate!r:.100}; {restore}")
    return ProjectInfo(Path(project_dir), tuple(names), simulate)
