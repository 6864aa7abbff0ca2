#!/usr/bin/env bash
# Set everything up, then run the main job: the built-in dataset and a short MGRAL campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
exec .venv/bin/mgral demo "$@"
