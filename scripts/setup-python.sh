#!/bin/sh
# Install the Python side of the live-mode tests (the thriftpy2 peer server).
# Idempotent and quiet: does nothing if thriftpy2 already imports. Downloads thriftpy2
# from PyPI with pip otherwise.
set -eu
PYTHON=${PYTHON:-python3}
if "$PYTHON" -c 'import thriftpy2' 2>/dev/null; then
  exit 0
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check 'thriftpy2>=0.5,<0.8'
"$PYTHON" -c 'import thriftpy2'
# build.rs watches this file: touching it makes the next cargo build re-check for
# thriftpy2 and enable the tests that need it (they show as ignored without it).
touch "$0"
