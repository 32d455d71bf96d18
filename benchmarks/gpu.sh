#!/usr/bin/env bash
# The CUDA figures in one go, on the first visible GPU; JSON goes to benchmarks/results/gpu/:
#   embedding.json  resnet50_trunc in bf16: tiles/s of the whole embed pipeline (reading, decoding and the model;
#                   reader processes from --workers auto, or WORKERS=N) with the tiles decoded by the reader
#                   processes on the CPU (--decode cpu) and decoded on the GPU (--decode device), of the model
#                   alone on tensors in memory, and of reading and decoding alone on each path
#   decode.json     tiles/s of direct JPEG-tile reads against the slide library on the CPU, of nvJPEG decoding of
#                   the same tiles on the GPU (batches of 256), and of the reader processes
#   training.json   abmil with NCMI and CE under bf16 autocast
# Refuses to run without a CUDA device. `benchmarks/gpu.sh --dry-run` runs the same steps on the CPU at toy sizes
# into benchmarks/results/tmp/gpu-dry/ (ignored by git), to check the script on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [[ "${1:-}" == "--dry-run" ]]; then
    DEVICE=cpu
    OUT=tmp/gpu-dry
    EMBED=(--encoder resnet18 --precision fp32 --batch-size 16 --size 4096x3072 --repeats 1 --decode cpu,device)
    DECODE=(--size 4096x3072 --tiles 50 --repeats 1)
    TRAIN=(--repeats 1 --sizes 200)
else
    "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA device')"
    DEVICE=cuda
    OUT=gpu
    EMBED=(--encoder resnet50_trunc --precision bf16 --batch-size 256 --decode cpu,device)
    DECODE=()
    TRAIN=()
fi
"$PY" benchmarks/embedding.py --device "$DEVICE" --workers "${WORKERS:-auto}" "${EMBED[@]}" --out "$OUT/embedding"
"$PY" benchmarks/decode.py --device "$DEVICE" "${DECODE[@]}" --out "$OUT/decode"
"$PY" benchmarks/training.py --device "$DEVICE" "${TRAIN[@]}" --out "$OUT/training"
