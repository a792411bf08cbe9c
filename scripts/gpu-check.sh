#!/usr/bin/env bash
# lossbench's acceptance check on a lent GPU machine, at most 7 minutes (each step its own budget, one deadline):
# a preflight of every import and one smoke run on the GPU, the default suite's wall time and GPU utilisation, bf16
# against fp32 paired by seed, experiments/full.yaml's time to its first step, the bench's GPU code paths.
# It writes DIR/gpu-check.json after every step and, for a failed step, DIR/<step>.log; nothing in the working tree.
# No network: --wheels WHEELS installs carried wheels (segmentation-models-pytorch, pydantic, wandb, monai, kornia, ...)
# into a scratch site first. Without a GPU it says so in one sentence and exits with 2. What and why:
# lossbench/bench/gpucheck.py.
#   scripts/gpu-check.sh --out DIR [--wheels WHEELS]      scripts/gpu-check.sh --dry-run   (the steps and budgets)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${1:-}" != "--dry-run" ] && ! command -v nvidia-smi >/dev/null 2>&1; then  # said before Python starts: no GPU, nothing to import
  echo "gpu-check: no GPU here (nvidia-smi is not on the PATH), so there is nothing to measure; run it on a machine with an NVIDIA GPU" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the working tree's lossbench, installed or not
exec "$PY" -m lossbench.bench.gpucheck "$@"
