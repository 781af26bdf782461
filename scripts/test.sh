#!/usr/bin/env bash
# Runs every test of the project on a fresh machine of this kind: installs the
# guest toolchain if missing, builds the guest examples, runs their native
# tests, checks formatting, lints and builds the host workspace, runs its tests
# (unit, property, crash and end-to-end tests), then a short run of every
# fuzz target (scripts/fuzz-smoke.sh, FUZZING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
step() { echo "== $* ($((SECONDS - t0))s)"; }

# The fuzz targets build from the start, in the background, at the lowest
# priority: the stages below leave cores idle (downloads, a crate or a link
# that one core waits on, tests waiting on servers and brokers), and this
# build takes that idle time. `set -m` gives it a process group of its own
# (so that a failing run stops its cargo) but keeps it in this session: on
# a kernel that groups a session's processes for scheduling (autogroup),
# `nice` only ranks processes of one session, and `setsid` would have made
# the build an equal of the whole run.
fuzz_log=$(mktemp)
set -m
FUZZ_NICE=19 FUZZ_OPT_LEVEL=1 FUZZ_BUILD_ONLY=1 bash scripts/fuzz-smoke.sh >"$fuzz_log" 2>&1 &
fuzz_build=$!
set +m
# On any exit: the fuzz build, and the Kafka broker if one was started.
kafka_started=
kafka_dir=$PWD/target/kafka/test-broker
cleanup() {
    kill -- "-$fuzz_build" 2>/dev/null || true
    if [ -n "$kafka_started" ]; then
        # A start still under way would leave its broker behind.
        wait "$kafka_start" 2>/dev/null || true
        KAFKA_DIR=$kafka_dir bash scripts/kafka-broker.sh stop || true
    fi
}
trap cleanup EXIT

step "guest toolchain"
bash scripts/setup.sh
step "kafka clients"
bash scripts/setup-kafka-clients.sh
step "browser (the console's tests)"
bash scripts/setup-browser.sh
# One Apache Kafka 4.4 broker for the whole run (tests/tests/e2e/on_kafka.rs:
# Leat on Kafka), its address in LEAT_TEST_KAFKA_BOOTSTRAP; stopped on exit.
# It starts now, beside the builds (the jars' download and the JVM's start
# are mostly waiting), and the tests wait for it.
step "kafka broker: starting beside the builds (scripts/kafka-broker.sh)"
kafka_started=1
kafka_out=$(mktemp)
kafka_log=$(mktemp)
KAFKA_DIR=$kafka_dir bash scripts/kafka-broker.sh start >"$kafka_out" 2>"$kafka_log" &
kafka_start=$!
step "guest components"
bash scripts/build-guests.sh
step "guest native tests"
bash scripts/test-guests.sh
step "format"
cargo fmt --all -- --check
# Lints and the tests' build are one compilation: clippy is the workspace
# crates' compiler (as under `cargo clippy`, which runs it over `cargo
# check`), so the dependencies are compiled once, not checked and then
# built. The same lints on every target (benches included), warnings
# denied. The wrapper is cargo configuration, not environment, so that the
# cargo runs of the tests (guest builds) do not inherit it; the run below
# gives the same, or it would rebuild the workspace. CLIPPY_ARGS, clippy's
# own arguments, does nothing without the wrapper.
step "lints and host tests: build"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
lint=(--config "build.rustc-workspace-wrapper=\"$(rustup which clippy-driver)\"")
cargo test --workspace --all-targets --no-run "${lint[@]}"
step "kafka broker: waiting for its start"
if ! wait "$kafka_start"; then
    cat "$kafka_log"
    echo "the Kafka broker did not start (scripts/kafka-broker.sh start)" >&2
    exit 1
fi
LEAT_TEST_KAFKA_BOOTSTRAP=$(cat "$kafka_out")
export LEAT_TEST_KAFKA_BOOTSTRAP
echo "kafka broker at $LEAT_TEST_KAFKA_BOOTSTRAP"
step "host tests: run (the fuzz targets may still build beside them)"
cargo test --workspace "${lint[@]}"
step "fuzz targets: waiting for their build"
if ! wait "$fuzz_build"; then
    cat "$fuzz_log"
    echo "the fuzz targets did not build" >&2
    exit 1
fi
tail -n 1 "$fuzz_log"
step "fuzz smoke (every target over its seeds and regressions, then 20 s each)"
FUZZ_NICE=0 FUZZ_OPT_LEVEL=1 bash scripts/fuzz-smoke.sh
step "done"
