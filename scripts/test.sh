#!/usr/bin/env bash
# The whole test suite: set-up (idempotent) then every test, parity tests against the Python
# references included. Tests that need ../shared/data run when it is present; without it they are
# skipped and counted at the end — except under CI (`CI` set, or CLIPDOOR_REQUIRE_SHARED_DATA=1 as
# .ci/run sets it), where a missing ../shared/data fails them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if [ -n "${CI:-}" ] && [ "${CI:-}" != "false" ]; then
    export CLIPDOOR_REQUIRE_SHARED_DATA="${CLIPDOOR_REQUIRE_SHARED_DATA:-1}"
fi
mkdir -p target
rm -f target/test-skips.txt
# Two tests at a time, each with one libtorch (OpenMP) thread: two tests that each start a thread per
# core oversubscribe the cores, and OpenMP's spinning threads then slowed the suite several-fold
# (tests/suite/train.rs: 217 s with the default threads, 45 s with one, on 2 cores). Tests that set their
# own thread count (`--threads`) still do; OMP_NUM_THREADS already set is kept.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
status=0
cargo test --no-fail-fast -- --test-threads=2 "$@" || status=$?
skipped=0
if [ -f target/test-skips.txt ]; then
    skipped=$(wc -l < target/test-skips.txt)
fi
echo "skipped for missing inputs: $skipped test(s)${CLIPDOOR_REQUIRE_SHARED_DATA:+ (shared data required: CLIPDOOR_REQUIRE_SHARED_DATA=$CLIPDOOR_REQUIRE_SHARED_DATA)}"
if [ "$skipped" -gt 0 ]; then
    sed 's/^/  skipped: /' target/test-skips.txt
fi
exit "$status"
