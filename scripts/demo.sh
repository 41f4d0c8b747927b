#!/usr/bin/env bash
# The main job: set-up (idempotent), then `clipdoor demo` (outputs under checkpoints/demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The dev profile builds dependencies with opt-level 2 (Cargo.toml) and shares its build with the
# test suite; the heavy work runs inside libtorch either way.
cargo run --quiet -- demo "$@"
