#!/usr/bin/env bash
# The CUDA figures in one go: embedding (resnet50_trunc, bf16) and training (abmil with NCMI and CE, bf16 autocast)
# on the first visible GPU; JSON goes to benchmarks/results/gpu/. Refuses to run without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA device')"
"$PY" benchmarks/embedding.py --encoder resnet50_trunc --device cuda --precision bf16 --batch-size 256 \
    --workers "${WORKERS:-8}" --out gpu/embedding
"$PY" benchmarks/training.py --device cuda --out gpu/training
