#!/usr/bin/env bash
# Set everything up, then run the whole test suite (slow tests included). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
