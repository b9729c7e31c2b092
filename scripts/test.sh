#!/usr/bin/env bash
# Runs every test of the workspace after installing what the build needs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/magnetar/target}"
cargo test --workspace "$@"
