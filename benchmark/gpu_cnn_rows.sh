#!/usr/bin/env bash
# Time the paper profile's small-CNN rows (full recipe) on a GPU in at most ~10 minutes.
#
#   benchmark/gpu_cnn_rows.sh [BUDGET_SECONDS] [ROOT]      (defaults: 540, data/benchmark/gpu-cnn)
#
# Needs a CUDA device, the offline MNIST / Fashion-MNIST (make data) and the venv's python
# (PYTHON=..., default .venv/bin/python, else python). Runs benchmark.gpu_cnn_rows, which runs the
# `paper` profile's CNN stages seed by seed with `python -m benchmark.stages` until the budget is
# spent and writes ROOT/gpu_cnn_rows.json (seconds per stage, mean per stage kind, projected total).
# `benchmark/gpu_cnn_rows.sh --dry-run` lists the stages without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
if [ "${1:-}" = "--dry-run" ]; then
  exec "$PY" -m benchmark.gpu_cnn_rows --dry-run
fi
BUDGET=${1:-540}
ROOT=${2:-data/benchmark/gpu-cnn}
export MODULARITY_DEVICE=${MODULARITY_DEVICE:-cuda}
# 10 minutes of wall clock at most, whatever happens inside (the budget leaves a minute for start-up).
exec timeout 600 "$PY" -m benchmark.gpu_cnn_rows --budget "$BUDGET" --root "$ROOT"
