#!/usr/bin/env bash
# Builds, on this machine, what the GPU checks of issue 4 run on a machine without cargo or
# internet, into the git-ignored folder .device/ (carried there by the device tool):
#   - train_bench (release, stripped): the benchmark of scripts/bench_cnn.sh;
#   - accel and graphed: test binaries (release) whose ignored tests need a CUDA GPU (the accel
#     shim's CUDA parts; a cnn training run whose steps replay a CUDA graph);
#   - torchvision 0.26.0 wheels (Python 3.10-3.13), for the PyTorch reference when the GPU machine lacks it.
# Then, on the GPU machine: scripts/device_check.sh (it runs both and the PyTorch reference).
# Both binaries NEED libtorch_cuda, libc10_cuda and libcudart.so.13 (the shim's CUDA half);
# device_check.sh points LD_LIBRARY_PATH at the GPU machine's torch/lib and nvidia/cu13/lib.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ensure_rust
ensure_libtorch
mkdir -p .device
cargo build --quiet --release -p stackhive-trainer --example train_bench
cp target/release/examples/train_bench .device/train_bench
for test in accel graphed; do
    exe=$(cargo test --quiet --release -p stackhive-trainer --test "$test" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable"):
        print(m["executable"])' "$test")
    cp "$exe" ".device/$test"
done
strip .device/train_bench .device/accel .device/graphed
# The GPU machine's python version is not known here: one wheel per likely version.
for py in 3.10 3.11 3.12 3.13; do
    ls .device/torchvision-0.26.0-cp${py/./}-*.whl >/dev/null 2>&1 ||
        .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: \
            --python-version "$py" --platform manylinux_2_28_x86_64 -d .device "torchvision==0.26.0"
done
for bin in .device/train_bench .device/accel .device/graphed; do
    for lib in libtorch_cuda.so libc10_cuda.so libcudart.so.13; do
        readelf -d "$bin" | grep -q "NEEDED.*\[$lib\]" || { echo "error: $bin does not need $lib: it would never see CUDA" >&2; exit 1; }
    done
done
du -ch .device/* | tail -n 1
ls -l .device
