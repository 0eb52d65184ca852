#!/usr/bin/env bash
# GPU acceptance check (issue: paper scale on real GPUs). On one H100/H200, in at most about 8 minutes:
#   bash scripts/gpu_check.sh            -> results/bench/gpu-check-<device>-<date>.json and a summary
# On a machine without CUDA it runs the same steps on tiny models (CI does: tests/test_gpu_check.py).
# Commit the JSON it writes on a GPU, with the command (it is inside the JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
