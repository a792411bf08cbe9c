#!/usr/bin/env bash
# lossbench's acceptance check on a GPU machine: the default suite's wall time and GPU utilisation,
# bf16 against fp32, experiments/full.yaml's time to its first step and images/s per run, and
# `make bench` at its GPU shapes. No network; about 8 minutes on one H200-class GPU. Writes
# reports/gpu-check.json, reports/bench (GPU rows beside the CPU rows) and a dated entry in
# reports/HISTORY.md. Without a GPU it says so in one sentence and exits with 2.
# What it measures and why: lossbench/bench/gpucheck.py.
#   scripts/gpu-check.sh            (uses .venv when there is one: `make install` first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then  # said before Python starts: no GPU, nothing to import
  echo "gpu-check: no GPU here (nvidia-smi is not on the PATH), so there is nothing to measure; run it on a machine with an NVIDIA GPU" >&2
  exit 2
fi
exec "$PY" -m lossbench.bench.gpucheck "$@"
