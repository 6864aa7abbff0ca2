#!/usr/bin/env bash
# Set everything up, then run the whole test suite (slow tests included). Extra args go to pytest.
# Tests run in MGRAL_TEST_WORKERS processes (pytest-xdist; default one per CPU core, at most 4), a test file
# per process at a time, so a module's shared set-up is made once; MGRAL_TEST_WORKERS=1 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 PYTHONHASHSEED=0
cores=$(nproc)
workers=${MGRAL_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
if [ "$workers" -gt 1 ]; then
  exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest -p no:xdist "$@"
