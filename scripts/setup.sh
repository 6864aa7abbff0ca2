#!/usr/bin/env bash
# Create .venv with every pinned dependency (requirements.lock) and MGRAL itself (editable).
# Idempotent: a second run only checks a stamp. Measured from nothing: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.mgral-setup-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . pytest==9.2.0 iniconfig==2.3.1 pluggy==1.7.0 pytest-xdist==3.8.0 execnet==2.1.2
rm -f .venv/.mgral-setup-*
touch "$stamp"
echo "setup: .venv ready ($(.venv/bin/python --version))"
