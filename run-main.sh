#!/usr/bin/env bash
# The main job: builds stackhive, starts an embedded coordinator (SQLite) and local worker
# processes, and pushes a few thousand jobs through them with live progress.
# Extra arguments go to `stackhive demo` (e.g. --jobs 10000 --workers 4).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
ensure_rust
ensure_libtorch
ensure_level2
log "building stackhive (release)"
cargo build --release --quiet -p stackhive-cli -p stackhive-worker
export RUST_LOG="${RUST_LOG:-warn}"
exec ./target/release/stackhive demo "$@"
