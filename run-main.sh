#!/usr/bin/env bash
# The main job: builds stackhive and runs the mission on this machine (`stackhive demo`): a
# generated ISIC-like dataset, CNN folds, a level-2 sweep, the ensembles, the submission and the
# HTML report, through an embedded coordinator (SQLite) and local worker processes.
# Extra arguments go to `stackhive demo` (e.g. --out DIR --models 200 --workers 4).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
ensure_rust
ensure_libtorch
ensure_level2
log "building stackhive (release)"
cargo build --release --quiet -p stackhive-cli -p stackhive-worker -p stackhive-trainer -p stackhive-stacker
export RUST_LOG="${RUST_LOG:-warn}"
exec "${CARGO_TARGET_DIR:-target}/release/stackhive" demo "$@"
