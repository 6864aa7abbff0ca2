"""Where a flow's parameters come from: the project's params.yaml plus explicit overrides."""

from __future__ import annotations

from pathlib import Path

from mgral_workspace.config import Params, load_params


def resolve_params(project_dir: str, params_file: str | None = None, **overrides) -> Params:
    """Load `params_file` (default <project>/params.yaml); non-None keyword overrides win.

    Accepted overrides: strategy, budget, cycles.
    """
    path = Path(params_file) if params_file else Path(project_dir) / "params.yaml"
    keys = {"strategy": "selection.strategy", "budget": "selection.budget", "cycles": "campaign.cycles"}
    dotted = {keys[k]: v for k, v in overrides.items() if v is not None}
    return load_params(path, dotted)
