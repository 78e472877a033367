# syntax=docker/dockerfile:1
# The worker image: `stackhive-worker` with `stackhive-trainer` (cnn, lr-find jobs on libtorch) and
# `stackhive-stacker` (level-2 `stack` jobs) beside it, where the worker looks for them, on the
# CUDA base image. Build from the repository root:
#
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t stackhive-worker:0.1.0 .
#
# The same image serves CPU workers (no GPU given, STACKHIVE_GPUS=0): the PyTorch wheel runs on
# CPU too, and `stack` jobs need its libtorch (the zoo's nets) as much as `cnn` jobs do.
#
# libtorch is the PyTorch 2.11.0 wheel (CUDA 13.0 build, with its own CUDA and cuDNN libraries
# from the nvidia-* wheels) pip-installed into a venv, as scripts/setup.sh does. The build stage
# derives from the stage that made the venv, so the binaries' RUNPATH (set at link time to the
# wheel's torch/lib and xgboost/lib) is the same path in the final image: no LD_LIBRARY_PATH.
# The base image therefore needs no cuDNN of its own; the driver comes from the NVIDIA container
# runtime (`--gpus`, compose's device reservation, Kubernetes' nvidia.com/gpu).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# The Rust toolchain, copied into the build stage below so that the build runs on the final
# image's own distribution (its Python, its glibc).
FROM ${RUST_IMAGE} AS rust

FROM ${CUDA_IMAGE} AS libs
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# libtorch (torch), XGBoost's library (xgboost-cpu) and CatBoost, which the stacker runs through
# its Python bridge: the versions scripts/setup.sh installs (ensure_libtorch, ensure_level2).
RUN python3 -m venv /opt/stackhive/venv \
    && /opt/stackhive/venv/bin/pip install --no-cache-dir \
        torch==2.11.0 xgboost-cpu==3.2.0 catboost==1.2.10
ENV PATH=/opt/stackhive/venv/bin:$PATH

FROM libs AS build
# A C and C++ compiler (the trainer's libtorch shim, LightGBM), libclang (LightGBM's bindings).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libclang-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
# LightGBM needs CMake >= 3.28: the Python registry's, as in scripts/setup.sh.
RUN pip install --no-cache-dir "cmake>=3.28"
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH \
    LIBTORCH_USE_PYTORCH=1 \
    CMAKE=/opt/stackhive/venv/bin/cmake
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY data data
COPY spec spec
COPY coordinator coordinator
COPY worker worker
COPY cli cli
COPY ensemble ensemble
COPY report report
COPY trainer trainer
COPY stacker stacker
COPY tests tests
COPY migrations migrations
# torch-sys finds libtorch through the venv's python (LIBTORCH_USE_PYTORCH); XGBOOST_LIB_DIR
# makes the xgb crate link the wheel's library instead of downloading one.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    XGBOOST_LIB_DIR="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/xgboost/lib" \
    cargo build --release --locked \
        -p stackhive-worker -p stackhive-trainer -p stackhive-stacker \
    && install -D -m 0755 -t /out \
        target/release/stackhive-worker target/release/stackhive-trainer \
        target/release/stackhive-stacker

FROM libs
# The same uid (10001) as the coordinator image, so both read one volume of certificates and
# tokens. The worker runs unprivileged, so shell jobs run as this user too: the container is
# their boundary (STACKHIVE_RUN_AS is for a worker that runs as root on a bare machine).
RUN groupadd --system --gid 10001 stackhive \
    && useradd --system --uid 10001 --gid stackhive --home-dir /var/cache/stackhive \
        --shell /usr/sbin/nologin stackhive \
    && install -d -o stackhive -g stackhive -m 0750 /var/cache/stackhive /var/lib/stackhive \
        /var/lib/stackhive/data /etc/stackhive
COPY --from=build /out/ /usr/local/bin/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Fail the build, not the first job, when a library does not resolve.
RUN for b in stackhive-worker stackhive-trainer stackhive-stacker; do \
        if ldd "/usr/local/bin/$b" | grep -F 'not found'; then exit 1; fi; \
    done
USER 10001:10001
WORKDIR /var/cache/stackhive
# The stacker's CatBoost bridge runs with the venv's python. Caches and job folders go under one
# folder, a volume worth keeping across restarts (preprocessed image caches are costly).
ENV STACKHIVE_PYTHON=/opt/stackhive/venv/bin/python \
    STACKHIVE_DATASET_CACHE=/var/cache/stackhive/datasets \
    STACKHIVE_IMAGE_CACHE=/var/cache/stackhive/images \
    STACKHIVE_FEATURE_CACHE=/var/cache/stackhive/features \
    STACKHIVE_WORK_DIR=/var/cache/stackhive/jobs \
    TORCH_CPP_LOG_LEVEL=ERROR \
    RUST_LOG=info
# SIGTERM: stop leasing, let running jobs finish for STACKHIVE_DRAIN_TIMEOUT_S, hand back the rest.
STOPSIGNAL SIGTERM
ENTRYPOINT ["stackhive-worker"]
