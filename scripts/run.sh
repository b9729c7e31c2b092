#!/usr/bin/env bash
# Builds (release) and runs Magnetar after installing what the build needs. With no arguments
# it starts `magnetar standalone` (metadata store, bookie and broker in one process, data under
# ./data/standalone); any arguments are passed to the `magnetar` binary instead (for example
# `./scripts/run.sh produce my-topic -m hello`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/magnetar/target}"
cargo build --release -p magnetar
if [ "$#" -eq 0 ]; then
  set -- standalone --data-dir data/standalone
fi
exec "$CARGO_TARGET_DIR/release/magnetar" "$@"
