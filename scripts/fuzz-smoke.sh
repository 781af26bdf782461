#!/usr/bin/env bash
# A short fuzzing pass over every target in fuzz/: each runs its committed
# seeds (fuzz/corpus/TARGET) and crash regressions (fuzz/regressions/TARGET),
# then fuzzes for FUZZ_SECONDS (20 by default). Exits non-zero when a target
# crashes (the crash input is then in fuzz/artifacts/TARGET/).
#
# Needs rustup (a nightly toolchain if there is one, else stable with
# RUSTC_BOOTSTRAP=1: cargo-fuzz passes nightly flags); installs cargo-fuzz
# from crates.io if missing.
#
#   bash scripts/fuzz-smoke.sh                   # all targets, 20 s each
#   FUZZ_SECONDS=60 bash scripts/fuzz-smoke.sh batch_decode journal_replay
#   FUZZ_NO_RUNTIME=1 bash scripts/fuzz-smoke.sh # skip topology_parse and http_request (no wasmtime build)
#   FUZZ_TARGET_DIR=/tmp/t bash scripts/fuzz-smoke.sh  # build elsewhere than fuzz/target
#   FUZZ_NO_REGRESSIONS=1 bash scripts/fuzz-smoke.sh    # skip fuzz/regressions (known, unfixed crashes)
#   FUZZ_BUILD_ONLY=1 bash scripts/fuzz-smoke.sh        # build the targets, run nothing
#   FUZZ_JOBS=1 bash scripts/fuzz-smoke.sh              # one target at a time (default: one per core)
#   FUZZ_OPT_LEVEL=1 bash scripts/fuzz-smoke.sh         # the log's targets at opt-level 1 (cargo-fuzz: 3)
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-20}
NICE=(nice -n "${FUZZ_NICE:-15}")

# cargo-fuzz passes nightly flags (-Z...): a nightly toolchain, or else
# stable told to accept them (it ships the sanitizer runtimes too).
if rustup toolchain list | grep -q '^nightly'; then
    toolchain=+nightly
else
    echo "fuzz-smoke: no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
    toolchain=+stable
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    "${NICE[@]}" cargo install --locked cargo-fuzz
fi

# The log's targets (AddressSanitizer), then the runtime's.
log_targets=(batch_decode encoded_outputs journal_replay kafka_request schema_check)
if [ $# -gt 0 ]; then
    targets=("$@")
elif [ -n "${FUZZ_NO_RUNTIME:-}" ]; then
    targets=("${log_targets[@]}")
else
    targets=("${log_targets[@]}" topology_parse http_request)
fi
# How each target is built. The log's targets: AddressSanitizer. Those of
# the runtime (it pulls wasmtime, whose build under ASan takes 25 minutes
# here): no sanitizer, dev profile (6 minutes of CPU), in their own target
# dir so that the two builds never invalidate each other.
base=${FUZZ_TARGET_DIR:-target}
flags_for() {
    case "$1" in
        topology_parse | http_request)
            echo "--features runtime -s none --dev --target-dir $base-runtime" ;;
        *)
            echo "--target-dir $base" ;;
    esac
}

# The log's targets' opt-level, for their build and their runs alike (a
# run with other flags would build again). CI's smoke (scripts/test.sh)
# asks for 1: measured on this 2-core machine (FUZZING.md), the ASan build
# took 535 s of CPU instead of 713 s at cargo-fuzz's 3, and ran 78-91% as
# many inputs per second (batch_decode, kafka_request, schema_check).
if [ -n "${FUZZ_OPT_LEVEL:-}" ]; then
    export CARGO_PROFILE_RELEASE_OPT_LEVEL=$FUZZ_OPT_LEVEL
fi

start=$(date +%s)
echo "fuzz-smoke: building ${targets[*]}"
to_build=("${targets[@]}")
if [ "${targets[*]:0:${#log_targets[@]}}" = "${log_targets[*]}" ]; then
    # All of the log's targets: one cargo run without a target name builds
    # every binary but the runtime's (they require its feature), side by
    # side: each is a long single-unit compile under ASan.
    # shellcheck disable=SC2046 # the flags are words
    "${NICE[@]}" cargo "$toolchain" fuzz build $(flags_for batch_decode)
    to_build=("${targets[@]:${#log_targets[@]}}")
fi
for t in "${to_build[@]}"; do
    # shellcheck disable=SC2046 # the flags are words
    "${NICE[@]}" cargo "$toolchain" fuzz build $(flags_for "$t") "$t"
done
built=$(date +%s)
echo "fuzz-smoke: built in $((built - start)) s"
if [ -n "${FUZZ_BUILD_ONLY:-}" ]; then
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One fuzzer is one thread: FUZZ_JOBS targets run at once (the cores here).
jobs_max=${FUZZ_JOBS:-$(nproc)}
# Runs target $1; its report goes to $work/$1.out, its exit status to $work/$1.rc.
run_target() {
    local t=$1 rc=0
    # New corpus entries go to a scratch directory (the first one given):
    # the committed seeds stay as they are.
    local dirs=("$work/$t" "corpus/$t")
    mkdir -p "$work/$t"
    if [ -d "regressions/$t" ] && [ -z "${FUZZ_NO_REGRESSIONS:-}" ]; then
        dirs+=("regressions/$t")
    fi
    echo "fuzz-smoke: $t for $SECONDS_EACH s over ${dirs[*]:1}"
    # shellcheck disable=SC2046 # the flags are words
    "${NICE[@]}" cargo "$toolchain" fuzz run $(flags_for "$t") "$t" "${dirs[@]}" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>"$work/$t.log" || rc=$?
    if [ "$rc" -ne 0 ]; then
        grep -m 1 -A 2 'panicked at' "$work/$t.log" || true
        grep -E '^(SUMMARY|Base64|artifact_prefix)' "$work/$t.log" || tail -n 40 "$work/$t.log"
    else
        grep -E '^stat::number_of_executed_units|^Done' "$work/$t.log" || true
    fi
    echo "$rc" >"$work/$t.rc"
}
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
        wait -n || true
    done
    run_target "$t" >"$work/$t.out" 2>&1 &
done
wait
failed=()
for t in "${targets[@]}"; do
    cat "$work/$t.out"
    if [ "$(cat "$work/$t.rc" 2>/dev/null || echo missing)" != 0 ]; then
        failed+=("$t")
    fi
done
echo "fuzz-smoke: done in $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-smoke: CRASHED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, no crash"
