#!/usr/bin/env bash
# Runs every test of the project on a fresh machine of this kind: installs the
# guest toolchain if missing, builds the guest examples, runs their native
# tests, checks formatting and lints, then runs the host workspace's tests
# (unit, property, crash and end-to-end tests), then a short run of every
# fuzz target (scripts/fuzz-smoke.sh, FUZZING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
step() { echo "== $* ($((SECONDS - t0))s)"; }

step "guest toolchain"
bash scripts/setup.sh
step "kafka clients"
bash scripts/setup-kafka-clients.sh
step "browser (the console's tests)"
bash scripts/setup-browser.sh
step "guest components"
bash scripts/build-guests.sh
step "guest native tests"
bash scripts/test-guests.sh
step "format"
cargo fmt --all -- --check
step "lints"
cargo clippy --workspace --all-targets -- -D warnings
step "host tests: build"
cargo test --workspace --no-run
# The fuzz targets build while the host tests run, at the lowest priority:
# the tests wait on disks, servers and brokers for much of their run, and
# the build takes that idle time (about a quarter of the whole run alone).
step "host tests: run (the fuzz targets build beside them, nice 19)"
fuzz_log=$(mktemp)
# Its own process group, so that a failing test run stops its cargo too.
FUZZ_NICE=19 FUZZ_BUILD_ONLY=1 setsid bash scripts/fuzz-smoke.sh >"$fuzz_log" 2>&1 &
fuzz_build=$!
trap 'kill -- "-$fuzz_build" 2>/dev/null || true' EXIT
cargo test --workspace
step "fuzz targets: waiting for their build"
if ! wait "$fuzz_build"; then
    cat "$fuzz_log"
    echo "the fuzz targets did not build" >&2
    exit 1
fi
tail -n 1 "$fuzz_log"
step "fuzz smoke (every target over its seeds and regressions, then 20 s each)"
FUZZ_NICE=0 bash scripts/fuzz-smoke.sh
step "done"
