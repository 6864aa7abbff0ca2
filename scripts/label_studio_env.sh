#!/usr/bin/env bash
# Create .venv-labelstudio with a pinned Label Studio (its pins clash with ours, so it lives apart).
# Every package of that venv is pinned in scripts/label_studio_requirements.txt; the venv is rebuilt
# whenever that file changes. Used by the Label Studio integration test; idempotent.
# Prints the label-studio executable.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=scripts/label_studio_requirements.txt
WANT=$(sha256sum "$LOCK" | cut -d' ' -f1)
MARK=.venv-labelstudio/.mgral-lock-sha256
if [ ! -x .venv-labelstudio/bin/label-studio ] || [ "$(cat "$MARK" 2>/dev/null)" != "$WANT" ]; then
  rm -rf .venv-labelstudio
  "${PYTHON:-python3}" -m venv .venv-labelstudio
  .venv-labelstudio/bin/python -m pip install --quiet --disable-pip-version-check -r "$LOCK" >&2
  echo "$WANT" > "$MARK"
fi
echo "$PWD/.venv-labelstudio/bin/label-studio"
