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
step "guest components"
bash scripts/build-guests.sh
step "guest native tests"
bash scripts/test-guests.sh
step "format"
cargo fmt --all -- --check
step "lints"
cargo clippy --workspace --all-targets -- -D warnings
step "host tests"
cargo test --workspace
step "fuzz smoke (every target over its seeds and regressions, then 20 s each)"
FUZZ_NICE=0 bash scripts/fuzz-smoke.sh
step "done"
