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
# Two test binaries at a time: each parity test already keeps libtorch's threads busy.
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
