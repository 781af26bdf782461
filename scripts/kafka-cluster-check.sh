#!/usr/bin/env bash
# Issue 13: Leat on a 3-node Kafka cluster loses and duplicates nothing when
# a broker dies mid-processing. Too slow for every CI run (minutes); run it
# by hand or nightly:
#
#   bash scripts/kafka-cluster-check.sh                 # 100,000 events each
#   N=20000 KILL_NODE=2 bash scripts/kafka-cluster-check.sh
#
# What it does:
#  1. starts a 3-node KRaft cluster on this machine (scripts/kafka-broker.sh
#     with KAFKA_NODES=3: 3 JVMs, each a broker and a controller, 512M of
#     heap each; internal topics with 3 replicas and a minimum ISR of 2, and
#     so every topic without settings of its own);
#  2. `leat run --once --kafka-replication 3` of a topology of uppercase
#     (in -> out) and word-count (words -> counts), 4 partitions each, 2
#     instances each: creates the topics, changelog included, with 3
#     replicas (checked);
#  3. writes N events to `in` (key k<i>, value event-<i>) and N words to
#     `words` (acks=all, idempotent);
#  4. `leat run --kafka-replication 3` (until SIGTERM); once a third of the
#     inputs is committed, SIGKILLs node KILL_NODE (default: one at random,
#     printed); once two thirds are, restarts it (RESTART=0: it stays
#     down);
#  5. waits until both groups have committed every input (stable offsets),
#     stops leat with SIGTERM (it must exit 0);
#  6. reads `out`, `counts` and word-count's changelog with a read_committed
#     consumer: each EVENT-<i> exactly once with its key; each word's counts
#     1..k each exactly once; the changelog holds every word's total.
# Exit status 0 only if all of that holds; any loss or duplicate fails it.
# The cluster is stopped at the end (KEEP=1: kept, with the logs).
#
# Needs Java 17+, Maven, python3 (scripts/setup-kafka-clients.sh runs first),
# the guest components (bash scripts/build-guests.sh) and a `leat` binary:
# LEAT, or CARGO_TARGET_DIR's (or target/'s) debug/leat, built with `cargo
# build -p leat --bin leat` if missing.
#
# Environment: N (events per input, default 100000), KILL_NODE (1-3),
# RESTART (1), KEEP (0), TIMEOUT (seconds for the processing, default 1800),
# KAFKA_DIR (the cluster's directory, default target/kafka/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
t0=$SECONDS

N=${N:-100000}
KILL_NODE=${KILL_NODE:-$((RANDOM % 3 + 1))}
RESTART=${RESTART:-1}
KEEP=${KEEP:-0}
TIMEOUT=${TIMEOUT:-1800}
export KAFKA_DIR=${KAFKA_DIR:-$repo/target/kafka/cluster}

say() { echo "kafka-cluster-check: [$((SECONDS - t0)) s] $*" >&2; }
die() {
  echo "kafka-cluster-check: error: $*" >&2
  exit 1
}
for v in N TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[[ $KILL_NODE =~ ^[123]$ ]] || die "KILL_NODE must be 1, 2 or 3, not '$KILL_NODE'"

leat=${LEAT:-${CARGO_TARGET_DIR:-$repo/target}/debug/leat}
if [ ! -x "$leat" ]; then
  say "no $leat: cargo build -p leat --bin leat"
  cargo build -p leat --bin leat
fi
for g in uppercase word-count; do
  [ -f "guest-examples/out/$g.wasm" ] || die "guest-examples/out/$g.wasm is missing: bash scripts/build-guests.sh"
done
bash scripts/setup-kafka-clients.sh >/dev/null || die "scripts/setup-kafka-clients.sh failed"
py() { target/kafka-clients/venv/bin/python scripts/lib/kafka_cluster_check.py "$@"; }

work=$repo/target/kafka-cluster-check/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$work"
leat_pid=
cleanup() {
  local status=$?
  if [ -n "$leat_pid" ]; then kill -9 "$leat_pid" 2>/dev/null || true; fi
  if [ "$KEEP" != 1 ]; then
    bash scripts/kafka-broker.sh stop 2>/dev/null || true
    [ "$status" != 0 ] || rm -rf "$work"
  fi
  [ "$status" = 0 ] || echo "kafka-cluster-check: FAILED after $((SECONDS - t0)) s (logs: $work)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "a 3-node cluster (scripts/kafka-broker.sh, KAFKA_DIR=$KAFKA_DIR)"
bash scripts/kafka-broker.sh stop 2>/dev/null || true
bootstrap=$(KAFKA_NODES=3 KAFKA_HEAP=${KAFKA_HEAP:-512M} bash scripts/kafka-broker.sh start)

# Names of this run only: a kept cluster can run the check again.
run=check-$(date -u +%H%M%S)-$$
in=$run-in out=$run-out words=$run-words counts=$run-counts upper=$run-upper wc=$run-wc
{
  echo "name = \"$run\""
  for s in "$in" "$out" "$words" "$counts"; do
    printf '\n[[streams]]\nname = "%s"\npartitions = 4\n' "$s"
  done
  # processor, component, input, output
  for p in "$upper uppercase $in $out" "$wc word-count $words $counts"; do
    set -- $p
    printf '\n[[processors]]\nname = "%s"\ncomponent = "%s"\ninputs = ["%s"]\noutputs = ["%s"]\n' \
      "$1" "$repo/guest-examples/out/$2.wasm" "$3" "$4"
    printf 'instances = 2\nbatch_size = 200\n'
  done
} >"$work/topology.toml"
# Called in a subshell, which it replaces (exec): `$!` is then leat's pid,
# and the SIGTERM below reaches leat, not a shell waiting for it.
leat_run() {
  LEAT_DATA_DIR=$work/data exec "$leat" run "$work/topology.toml" --kafka-bootstrap "$bootstrap" \
    --kafka-replication 3 --kafka-host-id check "$@" </dev/null
}

say "the topics, with 3 replicas: leat run --once --kafka-replication 3"
(leat_run --once) >"$work/create.log" 2>&1 || die "leat run --once failed: $(tail -n 5 "$work/create.log")"
py describe --bootstrap "$bootstrap" --topics "$in" "$out" "$words" "$counts" "$wc-changelog" "$upper-changelog"

say "writing $N events to $in and $N words to $words"
py produce --bootstrap "$bootstrap" --topic "$in" --count "$N" --kind events
py produce --bootstrap "$bootstrap" --topic "$words" --count "$N" --kind words

# Inputs committed so far by both groups (`--stable`: only once stable, -1
# while a transaction holding offsets is open).
progress() {
  local a b
  a=$(py progress --bootstrap "$bootstrap" --group "$upper" --topic "$in" "$@" 2>/dev/null) || a=-1
  b=$(py progress --bootstrap "$bootstrap" --group "$wc" --topic "$words" "$@" 2>/dev/null) || b=-1
  if [ "$a" -lt 0 ] || [ "$b" -lt 0 ]; then echo -1; else echo $((a + b)); fi
}
# Waits until `progress $2` reaches $1, failing if leat ends or after TIMEOUT.
wait_progress() {
  local goal=$1 got
  shift
  while :; do
    got=$(progress "$@")
    [ "$got" -lt "$goal" ] || return 0
    kill -0 "$leat_pid" 2>/dev/null || die "leat run ended early: $(tail -n 20 "$work/leat.err")"
    [ $((SECONDS - started)) -lt "$TIMEOUT" ] || die "not done after ${TIMEOUT}s ($got of $((2 * N)) inputs committed)"
    sleep 1
  done
}

say "leat run --kafka-bootstrap $bootstrap --kafka-replication 3 (uppercase and word-count)"
started=$SECONDS
(RUST_LOG=warn,leat_on_kafka=info leat_run) >"$work/leat.out" 2>"$work/leat.err" &
leat_pid=$!
wait_progress $((2 * N / 3))
say "$(progress) of $((2 * N)) inputs committed: SIGKILL of node $KILL_NODE"
bash scripts/kafka-broker.sh kill-node "$KILL_NODE"
killed_at=$SECONDS
if [ "$RESTART" = 1 ]; then
  wait_progress $((4 * N / 3))
  say "$(progress) of $((2 * N)) inputs committed: node $KILL_NODE restarts"
  bash scripts/kafka-broker.sh start-node "$KILL_NODE"
fi
wait_progress $((2 * N)) --stable
say "every input committed, $((SECONDS - started)) s after leat started ($((SECONDS - killed_at)) s after the kill): SIGTERM"
kill -TERM "$leat_pid"
status=0
wait "$leat_pid" || status=$?
leat_pid=
[ "$status" = 0 ] || die "leat run exited with status $status: $(tail -n 20 "$work/leat.err")"
grep "^processor " "$work/leat.out" >&2 || true
if grep -q "reconnects\|aborted" "$work/leat.err"; then
  say "leat's warnings after the kill: $(grep -c "reconnects" "$work/leat.err") reconnection(s), $(grep -c "transaction aborted" "$work/leat.err") aborted transaction(s)"
fi

say "checking the outputs with a read_committed consumer"
py verify --bootstrap "$bootstrap" --output "$out" --count "$N"
py verify-words --bootstrap "$bootstrap" --output "$counts" --changelog "$wc-changelog" --count "$N"
say "passed: $N events and $N words on 3 brokers, node $KILL_NODE SIGKILLed mid-processing$([ "$RESTART" = 1 ] && echo " and restarted"), nothing lost or duplicated"
