#!/usr/bin/env bash
# The tests: unit tests, the shared store suite on PostgreSQL and SQLite, and the cluster tests
# with real coordinator and worker processes. Starts PostgreSQL when it is not running.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
ensure_rust
ensure_postgres
export RUST_LOG="${RUST_LOG:-warn}"
log "building"
cargo build --workspace --bins --tests --quiet
log "testing"
cargo test --workspace -- --test-threads=2
