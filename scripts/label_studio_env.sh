#!/usr/bin/env bash
# Create .venv-labelstudio with a pinned Label Studio (its pins clash with ours, so it lives apart).
# Used by the Label Studio integration test; idempotent. Prints the label-studio executable.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.23.2
if [ ! -x .venv-labelstudio/bin/label-studio ] || ! .venv-labelstudio/bin/pip show label-studio 2>/dev/null | grep -q "^Version: $VERSION$"; then
  "${PYTHON:-python3}" -m venv .venv-labelstudio
  .venv-labelstudio/bin/python -m pip install --quiet --disable-pip-version-check "label-studio==$VERSION" >&2
fi
echo "$PWD/.venv-labelstudio/bin/label-studio"
