#!/usr/bin/env bash
# The GPU path of the generator in one run (under 10 minutes on one GPU): see tools/gpu_check.py.
# Needs the project installed (make install) and the prepared data in data/; installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
exec timeout "${GPU_CHECK_TIMEOUT_S:-600}" "$PYTHON" -m tools.gpu_check --data-dir "${DATA_DIR:-data}" \
  --output "${OUTPUT:-gpu-check.json}" "$@"
