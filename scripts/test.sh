#!/usr/bin/env bash
# The whole test suite: set-up (idempotent) then every test, parity tests against the Python
# references included. Tests that need ../shared/data run when it is present and say SKIPPED otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two test binaries at a time: each parity test already keeps libtorch's threads busy.
cargo test --no-fail-fast -- --test-threads=2 "$@"
