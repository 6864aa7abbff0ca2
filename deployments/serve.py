"""Serve the `cycle` deployment of the `mgral` flow (so `prefect deployment run mgral/cycle` works).

Run `mgral serve PROJECT [--cron "0 6 * * *"]` (or `python -m deployments.serve PROJECT`) with
PREFECT_API_URL pointing at a Prefect server; the process executes triggered runs until stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cycle import mgral_cycle


def serve_cycle(project_dir: str, cron: str | None = None, strategy: str | None = None,
                budget: int | None = None) -> None:
    """Block, serving `mgral/cycle` with the project as its default parameter."""
    parameters = {"project_dir": str(Path(project_dir).resolve())}
    if strategy:
        parameters["strategy"] = strategy
    if budget:
        parameters["budget"] = budget
    mgral_cycle.serve(name="cycle", cron=cron, parameters=parameters,
                      description="One MGRAL active-learning cycle on a project", tags=["mgral"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("project_dir")
    parser.add_argument("--cron", default=None, help="schedule, e.g. '0 6 * * *' for 06:00 daily")
    parser.add_argument("--strategy", default=None)
    parser.add_argument("--budget", type=int, default=None)
    args = parser.parse_args()
    serve_cycle(args.project_dir, args.cron, args.strategy, args.budget)


if __name__ == "__main__":
    main()
