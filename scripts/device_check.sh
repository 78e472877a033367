#!/usr/bin/env bash
# The GPU checks of issue 4, on a GPU machine with python3 + torch 2.11 (cu130) but no cargo:
# the accel tests that need CUDA (CUDA graphs against eager steps, memory queries, bf16 on
# CUDA), a tiny cnn training with cuda_graph against the eager one, then scripts/bench_cnn.sh
# cuda (stackhive's variants and PyTorch eager, one run).
# Needs the bundle of scripts/device_bundle.sh in .device/. Usage: scripts/device_check.sh
# (STEPS, WARMUP, LOADER_THREADS, BATCH, SIZE as for bench_cnn.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
cuda_lib=$(python3 -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$cuda_lib:${LD_LIBRARY_PATH:-}"
export TORCH_CPP_LOG_LEVEL=ERROR
if ! python3 -c 'import torchvision' 2>/dev/null; then
    python3 -m pip install --quiet --no-deps --no-index --find-links .device "torchvision==0.26.0"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== accel tests on CUDA"
.device/accel --include-ignored --test-threads=1
echo "== a cnn training run replaying a CUDA graph against the eager one"
.device/graphed --include-ignored --nocapture
echo "== benchmark"
TRAIN_BENCH=.device/train_bench PYTHON=python3 \
    STEPS=${STEPS:-20} WARMUP=${WARMUP:-5} LOADER_THREADS=${LOADER_THREADS:-12} \
    scripts/bench_cnn.sh cuda
