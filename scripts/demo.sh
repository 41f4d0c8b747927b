#!/usr/bin/env bash
# The main job: set-up (idempotent), then `clipdoor demo` (outputs under checkpoints/demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --quiet -- demo "$@"
