#!/bin/sh
# Install the Python side of the live-mode tests (the thriftpy2 peer server).
# Idempotent and quiet: does nothing if thriftpy2 already imports.
set -eu
PYTHON=${PYTHON:-python3}
if "$PYTHON" -c 'import thriftpy2' 2>/dev/null; then
  exit 0
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check 'thriftpy2>=0.5,<0.8'
"$PYTHON" -c 'import thriftpy2'
