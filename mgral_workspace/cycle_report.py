"""A cycle's report for people: `cycles/cycle_NNN/cycle_report.json`, what the cycle decided and its warnings.

Steps add to it as they go (how the batch was selected, whether the detector found anything);
`mgral status` and `mgral cycle` print it. Selection and training never read it.
"""

from __future__ import annotations

import json
from pathlib import Path

from mgral_workspace.atomic import write_json_atomic

REPORT_FILE = "cycle_report.json"


def report_path(project_dir: str | Path, cycle: int) -> Path:
    return Path(project_dir) / "cycles" / f"cycle_{cycle:03d}" / REPORT_FILE


def load_cycle_report(project_dir: str | Path, cycle: int) -> dict:
    """The report of `cycle` ({"cycle": cycle, "warnings": []} when nothing was added yet)."""
    path = report_path(project_dir, cycle)
    if not path.exists():
        return {"cycle": cycle, "warnings": []}
    return json.loads(path.read_text())


def update_cycle_report(project_dir: str | Path, cycle: int, warnings: list[str] | None = None, **fields) -> dict:
    """Merge `fields` into the cycle's report and add `warnings` (each once); written atomically."""
    report = load_cycle_report(project_dir, cycle)
    report.update(fields)
    report["warnings"] = report.get("warnings", []) + [w for w in warnings or [] if w not in report.get("warnings", [])]
    write_json_atomic(report_path(project_dir, cycle), report)
    return report


def latest_cycle_report(project_dir: str | Path) -> dict | None:
    """The report of the latest cycle that wrote one, or None."""
    reports = sorted((Path(project_dir) / "cycles").glob(f"cycle_*/{REPORT_FILE}"))
    return json.loads(reports[-1].read_text()) if reports else None
