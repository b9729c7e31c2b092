#!/usr/bin/env bash
# Builds (release) and runs Magnetar after installing what the build needs. With no arguments
# it starts a bookie on 127.0.0.1:3181 over ./data/bookie; any arguments are passed to the
# `magnetar` binary instead (for example `./scripts/run.sh perf bookie --entries 100000`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/magnetar/target}"
cargo build --release -p magnetar
if [ "$#" -eq 0 ]; then
  set -- bookie --data-dir data/bookie --listen 127.0.0.1:3181
fi
exec "$CARGO_TARGET_DIR/release/magnetar" "$@"
