#!/usr/bin/env bash
# A short fuzzing pass over every target in fuzz/: each runs its committed
# seeds (fuzz/corpus/TARGET) and crash regressions (fuzz/regressions/TARGET),
# then fuzzes for FUZZ_SECONDS (20 by default). Exits non-zero when a target
# crashes (the crash input is then in fuzz/artifacts/TARGET/).
#
# Needs rustup with a stable and a nightly toolchain (cargo-fuzz builds with
# nightly's sanitizer flags); installs cargo-fuzz from crates.io if missing.
#
#   bash scripts/fuzz-smoke.sh                   # all targets, 20 s each
#   FUZZ_SECONDS=60 bash scripts/fuzz-smoke.sh batch_decode journal_replay
#   FUZZ_NO_RUNTIME=1 bash scripts/fuzz-smoke.sh # skip topology_parse (no wasmtime build)
#   FUZZ_TARGET_DIR=/tmp/t bash scripts/fuzz-smoke.sh  # build elsewhere than fuzz/target
#   FUZZ_NO_REGRESSIONS=1 bash scripts/fuzz-smoke.sh    # skip fuzz/regressions (known, unfixed crashes)
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-20}
NICE=(nice -n "${FUZZ_NICE:-15}")

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz-smoke: no nightly toolchain (rustup toolchain list): cargo-fuzz needs one" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    "${NICE[@]}" cargo install --locked cargo-fuzz
fi

if [ $# -gt 0 ]; then
    targets=("$@")
elif [ -n "${FUZZ_NO_RUNTIME:-}" ]; then
    targets=(batch_decode encoded_outputs journal_replay)
else
    targets=(batch_decode encoded_outputs journal_replay topology_parse)
fi
# One feature set for every build, so that the targets share one build.
features=()
[ -n "${FUZZ_TARGET_DIR:-}" ] && features=(--target-dir "$FUZZ_TARGET_DIR")
for t in "${targets[@]}"; do
    [ "$t" = topology_parse ] && features+=(--features runtime)
done

start=$(date +%s)
echo "fuzz-smoke: building ${targets[*]}"
for t in "${targets[@]}"; do
    "${NICE[@]}" cargo +nightly fuzz build "${features[@]}" "$t"
done
built=$(date +%s)
echo "fuzz-smoke: built in $((built - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    # New corpus entries go to a scratch directory (the first one given):
    # the committed seeds stay as they are.
    dirs=("$work/$t" "corpus/$t")
    mkdir -p "$work/$t"
    if [ -d "regressions/$t" ] && [ -z "${FUZZ_NO_REGRESSIONS:-}" ]; then
        dirs+=("regressions/$t")
    fi
    echo "fuzz-smoke: $t for $SECONDS_EACH s over ${dirs[*]:1}"
    if ! "${NICE[@]}" cargo +nightly fuzz run "${features[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>"$work/$t.log"; then
        failed+=("$t")
        grep -m 1 -A 2 'panicked at' "$work/$t.log" >&2 || true
        grep -E '^(SUMMARY|Base64|artifact_prefix)' "$work/$t.log" >&2 || tail -n 40 "$work/$t.log" >&2
    else
        grep -E '^stat::number_of_executed_units|^Done' "$work/$t.log" || true
    fi
done
echo "fuzz-smoke: done in $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-smoke: CRASHED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, no crash"
