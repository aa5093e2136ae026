#!/usr/bin/env bash
# The CUDA paths on one GPU in about ten minutes: the cuda tests, kill-and-resume training in fp16 and bf16,
# the largest batch at 1024x2048, inference and training throughput (tools/gpu_check.py says what each stage does).
#   tools/gpu_check.sh OUT_DIR [--stages tests resume ...]
# It installs the package from this checkout (no network needed), then writes OUT_DIR/summary.json and the
# benchmark reports, which `aticnet benchmark --report-from` renders into BENCHMARKS.md's GPU section.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
shift || true
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1; then
  echo "pip could not install this checkout; running it from src/"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # the tests import tests.helpers
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
exec "$PYTHON" tools/gpu_check.py --out "$OUT" "$@"
