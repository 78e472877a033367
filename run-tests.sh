#!/usr/bin/env bash
# The tests: unit tests, the shared store suite on PostgreSQL and SQLite, and the cluster tests
# with real coordinator and worker processes, and the CPU trainer tests. Starts PostgreSQL when it
# is not running, installs libtorch (the PyTorch wheel) into .venv when it is missing, and
# Chromium (the report test opens the HTML report in it).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
ensure_rust
ensure_postgres
ensure_libtorch
ensure_level2
ensure_chromium
ensure_deploy_lint
export RUST_LOG="${RUST_LOG:-warn}"
log "building"
cargo build --workspace --bins --tests --quiet
log "testing"
# --no-fail-fast: a failing test binary must not hide what else broke with it.
cargo test --workspace --no-fail-fast -- --test-threads=2
