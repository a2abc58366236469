#!/usr/bin/env bash
# Create .venv with the pinned TFX stack (see requirements/ and README "Install caveats").
# Idempotent: does nothing when .venv/.installed matches the current requirement files.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
stamp="$VENV/.installed"
digest=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi
command -v "$PYTHON" >/dev/null || { echo "bootstrap: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
echo "bootstrap: creating $VENV (first run downloads ~1.5 GB; later runs reuse pip's cache)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() {  # quiet pip; drops this machine's warnings about missing local index folders
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
pip install --upgrade "pip==25.3"
pip install -r requirements/base.txt -r requirements/dev.txt -c requirements/constraints.txt
# tfx/ml-metadata/tfdv 1.21 metadata cannot be satisfied on glibc 2.36: install the verified set without deps.
pip install --no-deps -r requirements/nodeps.txt
pip install --no-deps -e .
echo "$digest" > "$stamp"
echo "bootstrap: $VENV ready"
