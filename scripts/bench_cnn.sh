#!/usr/bin/env bash
# The trainer benchmark of issue 4, all in one run so the figures compare: training images/s of
# EfficientNet-B0 (batch 128 at 224×224 unless BATCH/SIZE say otherwise) for
#   - stackhive on random tensors: tch AdamW fp32, fused AdamW fp32, and on CUDA also fused
#     AdamW + bf16 autocast + channels-last, with and without a CUDA graph;
#   - stackhive with real data loading and the heavy augmentation (the loader), fused AdamW,
#     the best precision for the device;
#   - PyTorch eager (torchvision's EfficientNet-B0, scripts/bench_pytorch_efficientnet.py), fp32
#     and on CUDA bf16 autocast + channels-last.
# Usage: scripts/bench_cnn.sh [cpu|cuda]   (STEPS, WARMUP, LOADER_THREADS, BATCH, SIZE)
# On a machine without cargo (a GPU box), set TRAIN_BENCH to a train_bench binary built here
# and PYTHON to a python with torch; LD_LIBRARY_PATH must reach torch/lib (and nvidia/cu13/lib).
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}
batch=${BATCH:-128}
size=${SIZE:-224}
steps=${STEPS:-3}
warmup=${WARMUP:-1}
threads=${LOADER_THREADS:-4}
if [ -z "${TRAIN_BENCH:-}" ]; then
    source scripts/setup.sh
    ensure_rust
    ensure_libtorch
    cargo build --quiet --release -p stackhive-trainer --example train_bench
    TRAIN_BENCH=target/release/examples/train_bench
    PYTHON=.venv/bin/python
    # torchvision only for the PyTorch reference; --no-deps keeps the torch already installed.
    "$PYTHON" -c "import torchvision" 2>/dev/null ||
        "$PYTHON" -m pip install --quiet numpy pillow &&
        "$PYTHON" -m pip install --quiet --no-deps "torchvision==0.26.0"
fi
PYTHON=${PYTHON:-python3}
common=(--device "$device" --arch efficientnet-b0 --batch "$batch" --size "$size" --steps "$steps" --warmup "$warmup")
echo "== $(date -u +%FT%TZ) on $(hostname): $(nproc) cores; device $device"
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; fi
"$TRAIN_BENCH" "${common[@]}" --optimizer adamw
"$TRAIN_BENCH" "${common[@]}" --optimizer fused-adamw
if [ "$device" = cuda ]; then
    "$TRAIN_BENCH" "${common[@]}" --optimizer fused-adamw --precision bf16 --channels-last
    "$TRAIN_BENCH" "${common[@]}" --optimizer fused-adamw --precision bf16 --channels-last --cuda-graph
    "$TRAIN_BENCH" "${common[@]}" --optimizer fused-adamw --precision bf16 --channels-last --cuda-graph --data --loader-threads "$threads"
else
    "$TRAIN_BENCH" "${common[@]}" --optimizer fused-adamw --data --loader-threads "$threads"
fi
"$PYTHON" scripts/bench_pytorch_efficientnet.py --batch "$batch" --size "$size" --steps "$steps" --warmup "$warmup"
