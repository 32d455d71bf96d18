#!/usr/bin/env bash
# The CUDA figures in one go, on the first visible GPU; JSON goes to benchmarks/results/gpu/:
#   embedding-ENCODER.json  each encoder of ENCODERS (default: resnet50_trunc, uni (ViT-L/16), uni2-h (ViT-H/14),
#                   h-optimus-0 (ViT-g/14)) with random weights in bf16: tiles/s of the whole embed pipeline (reading,
#                   decoding and the model; reader processes from --workers auto, or WORKERS=N) with tiles decoded by
#                   the reader processes on the CPU (--decode cpu) and on the GPU (--decode device), of the model alone
#                   on tensors in memory, of reading and decoding alone, and FLOPs per tile against the ceiling at an
#                   assumed peak (PEAK_TFLOPS, default 989: dense bf16 of an H100/H200-class GPU)
#   decode.json     tiles/s of direct JPEG-tile reads against the slide library on the CPU, of nvJPEG decoding of
#                   the same tiles on the GPU (batches of 256), and of the reader processes
#   training.json   abmil with NCMI and CE under bf16 autocast
#   mil_throughput.json  bags/s of train() (abmil, NCMI) at bags_per_step 1 and 32
# and prints the summary table (benchmarks/gpu_report.py) that goes into the README. Refuses to run without a CUDA
# device. `benchmarks/gpu.sh --dry-run` runs the same steps on the CPU at toy sizes into
# benchmarks/results/tmp/gpu-dry/ (ignored by git), to check the script on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PEAK=(--peak-tflops "${PEAK_TFLOPS:-989}")
if [[ "${1:-}" == "--dry-run" ]]; then
    DEVICE=cpu
    OUT=tmp/gpu-dry
    read -r -a NAMES <<< "${ENCODERS:-resnet18 timm:vit_tiny_patch16_224}"
    EMBED=(--precision fp32 --batch-size 16 --size 4096x3072 --repeats 1 --decode cpu,device)
    DECODE=(--size 4096x3072 --tiles 50 --repeats 1)
    TRAIN=(--repeats 1 --sizes 200)
    MIL=(--bags 64 --tiles 20 --features 32 --epochs 2)
else
    "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA device')"
    DEVICE=cuda
    OUT=gpu
    read -r -a NAMES <<< "${ENCODERS:-resnet50_trunc uni uni2-h h-optimus-0}"
    EMBED=(--precision bf16 --batch-size 256 --size 49152x36864 --decode cpu,device)
    DECODE=()
    TRAIN=()
    MIL=(--bags 128 --tiles 4000 --features 1536 --epochs 4)
fi
for name in "${NAMES[@]}"; do
    "$PY" benchmarks/embedding.py --device "$DEVICE" --workers "${WORKERS:-auto}" --encoder "$name" "${EMBED[@]}" \
        "${PEAK[@]}" --out "$OUT/embedding-${name//[:\/]/_}"
done
"$PY" benchmarks/decode.py --device "$DEVICE" "${DECODE[@]}" --out "$OUT/decode"
"$PY" benchmarks/training.py --device "$DEVICE" "${TRAIN[@]}" --out "$OUT/training"
"$PY" benchmarks/mil_throughput.py --device "$DEVICE" "${MIL[@]}" --out "$OUT/mil_throughput"
"$PY" benchmarks/gpu_report.py "benchmarks/results/$OUT"
