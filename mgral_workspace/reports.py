"""Report files of a campaign: metrics.json (for `dvc metrics`) and learning_curve.csv (for `dvc plots`)."""

from __future__ import annotations

import csv
from pathlib import Path

from mgral_workspace.atomic import atomic_open, write_json_atomic

CURVE_COLUMNS = ["strategy", "cycle", "labeled", "map50_95", "map50"]


def write_campaign_reports(reports: Path, points: list[dict], metrics: dict) -> None:
    reports.mkdir(parents=True, exist_ok=True)
    write_json_atomic(reports / "metrics.json", metrics)
    with atomic_open(reports / "learning_curve.csv", "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(points)
