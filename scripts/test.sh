#!/usr/bin/env bash
# Runs every test of the workspace after installing what the build needs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/magnetar/target}"
# The multi-process tests start the `magnetar` binary; `cargo test` builds a package's binary
# only for that package's own tests, so build it first (a no-op when it is up to date).
cargo build -p magnetar
cargo test --workspace "$@"
