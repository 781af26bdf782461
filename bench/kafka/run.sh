#!/usr/bin/env bash
# Leat's Kafka listener against Apache Kafka, side by side in one run, with
# the same client (confluent-kafka, bench.py): COUNT events of SIZE bytes to
# a topic of 4 partitions, acks=all, then a fresh consumer reading them all.
#
#   bash bench/kafka/run.sh                 # 1,000,000 events, 3 rounds
#   COUNT=200000 ROUNDS=1 bash bench/kafka/run.sh
#
# Targets, one after the other in each round (TARGETS to choose):
#   leat          `leat serve --kafka-listen` (release build), fresh data dir
#   kafka-default Apache Kafka 4.4.0, one KRaft broker+controller, defaults
#   kafka-flush1  the same with log.flush.interval.messages=1 (a flush after
#                 every append, as Leat makes every acknowledged write durable)
# Every target starts on fresh storage and free ports and is stopped after
# its round. Results: bench/kafka/results/<UTC time>-<COUNT>/ (machine.txt,
# raw.jsonl, table.md); logs and data: target/bench-kafka/run-<UTC time>/
# (removed after a run that finished, unless KEEP=1). A run that fails or is
# interrupted stops every process it started and leaves its partial results
# in target/bench-kafka/incomplete/, not under bench/kafka/results.
# Several runs pooled into one table:
#   target/kafka-clients/venv/bin/python bench/kafka/bench.py table \
#     --raw bench/kafka/results/*-1000000/raw.jsonl
#
# Needs: cargo, python3 (venv), Java 17+ and Maven (Kafka's jars from Maven
# Central, bench/kafka/pom.xml, fetched and started by scripts/kafka-broker.sh).
# CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

COUNT=${COUNT:-1000000}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-100}
PARTITIONS=${PARTITIONS:-4}
TARGETS=${TARGETS:-leat kafka-default kafka-flush1}
KEEP=${KEEP:-0}
# Seconds for each phase of a round (produce, consume) and for a start.
TIMEOUT=${TIMEOUT:-900}
START_TIMEOUT=${START_TIMEOUT:-120}

bench_name=bench-kafka
# say, die, run, bench_cleanup:
# shellcheck source=bench/kafka/common.sh
source bench/kafka/common.sh

work=$repo/target/bench-kafka
venv=$repo/target/kafka-clients/venv
python=$venv/bin/python
cargo_target=${CARGO_TARGET_DIR:-$repo/target}
leat=$cargo_target/release/leat
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$repo/bench/kafka/results/$stamp-$COUNT
run_dir=$work/run-$stamp
mkdir -p "$work" "$run_dir"

# The brokers this script started (pids) and the command it waits for,
# stopped on any exit (bench/kafka/common.sh).
trap 'bench_cleanup $? bench-kafka' EXIT
trap 'exit 130' INT TERM

stop_broker() {
  local pid=$1
  stop_process "$pid"
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  pids=("${kept[@]+"${kept[@]}"}")
}

# CPU seconds (user + system) a process has used so far, from /proc.
clk_tck=$(getconf CLK_TCK)
cpu_seconds() {
  awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_log PID LOG PATTERN TIMEOUT WHAT: until LOG holds PATTERN;
# stop_process PID: SIGTERM, SIGKILL 30 s later.
. scripts/lib/processes.sh

# --- 1. What the run needs -------------------------------------------------
for target in $TARGETS; do
  case $target in
    leat | kafka-default | kafka-flush1) ;;
    *) die "unknown target $target in TARGETS (leat, kafka-default, kafka-flush1)" ;;
  esac
done
[ -n "${TARGETS// /}" ] || die "TARGETS is empty"
for v in COUNT ROUNDS SIZE PARTITIONS TIMEOUT START_TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
command -v java >/dev/null 2>&1 || die "java is missing: install Java 17+ (Debian: apt-get install openjdk-17-jdk-headless)"
command -v mvn >/dev/null 2>&1 || die "mvn is missing: install Maven (Debian: apt-get install maven)"
command -v cargo >/dev/null 2>&1 || die "cargo is missing"

say "clients: scripts/setup-kafka-clients.sh"
run bash scripts/setup-kafka-clients.sh >"$work/setup-clients.log" 2>&1 ||
  die "scripts/setup-kafka-clients.sh failed: see $work/setup-clients.log"

say "Apache Kafka's jars: scripts/kafka-broker.sh fetch"
lib=$(bash scripts/kafka-broker.sh fetch 2>"$work/fetch.log") ||
  die "scripts/kafka-broker.sh fetch failed: $(tail -n 5 "$work/fetch.log")"
kafka_version=$(find "$lib" -name 'kafka_2.13-*.jar' | sed 's/.*kafka_2\.13-\(.*\)\.jar/\1/')
[ -n "$kafka_version" ] || die "no kafka_2.13 jar in $lib"

case " $TARGETS " in
  *" leat "*)
    say "leat: cargo build --release -p leat --bin leat (target: $cargo_target)"
    run cargo build --release -p leat --bin leat >"$work/cargo.log" 2>&1 ||
      die "cargo build failed: see $work/cargo.log"
    ;;
esac

# --- 2. Machine ------------------------------------------------------------
mkdir -p "$results"
model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
disk=$(df -P "$work" | awk 'NR == 2 { print $1 }')
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git describe --always --dirty --exclude '*' 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "cpu: $model"
  echo "ram: $mem"
  echo "disk: $disk ($(findmnt -no FSTYPE -T "$work" 2>/dev/null || echo '?'))"
  echo "kernel: $(uname -r)"
  echo "java: $(java -version 2>&1 | head -n 1)"
  echo "kafka: $kafka_version"
  echo "client: $("$python" -c 'import importlib.metadata as m, confluent_kafka as c; print("confluent-kafka", m.version("confluent-kafka"), "librdkafka", c.libversion()[0])')"
  echo "count: $COUNT, size: $SIZE, partitions: $PARTITIONS, rounds: $ROUNDS"
  echo "load average before (1/5/15 min): $load_before"
} >"$results/machine.txt"
cat "$results/machine.txt" >&2

# --- 3. One round against one target ----------------------------------------
token=bench-$RANDOM$RANDOM
topic=bench
result_file=
broker_cpu=

run_leat() {
  local round=$1
  local dir=$run_dir/leat-$round
  mkdir -p "$dir/data"
  local http kport
  http=$(free_port)
  kport=$(free_port)
  LEAT_DATA_DIR=$dir/data RUST_LOG=warn "$leat" serve --listen "127.0.0.1:$http" --token "$token" \
    --kafka-listen "127.0.0.1:$kport" </dev/null >"$dir/serve.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_for_log "$pid" "$dir/serve.log" "kafka listening on" "$START_TIMEOUT" "leat serve" || die "$wait_error"
  run env "LEAT_SERVER=127.0.0.1:$http" "LEAT_TOKEN=$token" timeout 60 "$leat" stream create "$topic" \
    --partitions "$PARTITIONS" >"$dir/create.log" 2>&1 ||
    die "leat stream create failed: $(cat "$dir/create.log")"
  local cpu0
  cpu0=$(cpu_seconds "$pid")
  run timeout $((2 * TIMEOUT + 60)) "$python" bench/kafka/bench.py run --bootstrap "127.0.0.1:$kport" \
    --token "$token" --topic "$topic" --count "$COUNT" --size "$SIZE" --timeout "$TIMEOUT" \
    >"$dir/result.json" 2>"$dir/bench.err" ||
    die "bench.py against leat failed: $(tail -n 5 "$dir/bench.err") (server log: $dir/serve.log)"
  broker_cpu=$(awk -v a="$cpu0" -v b="$(cpu_seconds "$pid")" 'BEGIN { printf "%.2f", b - a }')
  stop_broker "$pid"
  result_file=$dir/result.json
}

run_kafka() {
  local round=$1 flavour=$2
  local dir=$run_dir/$flavour-$round
  # One KRaft node on fresh storage and free ports (scripts/kafka-broker.sh:
  # Kafka's config/server.properties for one node), with the flavour's setting.
  local extra= address port
  if [ "$flavour" = kafka-flush1 ]; then
    extra="log.flush.interval.messages=1"
  fi
  address=$(KAFKA_DIR=$dir KAFKA_EXTRA=$extra START_TIMEOUT=$START_TIMEOUT \
    bash scripts/kafka-broker.sh start 2>"$run_dir/$flavour-$round-start.log") ||
    die "kafka ($flavour) did not start: $(tail -n 5 "$run_dir/$flavour-$round-start.log")"
  port=${address##*:}
  local pid
  pid=$(cat "$dir/pid")
  pids+=("$pid")
  run timeout 120 "$python" bench/kafka/bench.py create --bootstrap "127.0.0.1:$port" --topic "$topic" \
    --partitions "$PARTITIONS" >"$dir/create.log" 2>&1 ||
    die "creating the topic on kafka failed: $(tail -n 5 "$dir/create.log")"
  local cpu0
  cpu0=$(cpu_seconds "$pid")
  run timeout $((2 * TIMEOUT + 60)) "$python" bench/kafka/bench.py run --bootstrap "127.0.0.1:$port" \
    --topic "$topic" --count "$COUNT" --size "$SIZE" --timeout "$TIMEOUT" \
    >"$dir/result.json" 2>"$dir/bench.err" ||
    die "bench.py against kafka ($flavour) failed: $(tail -n 5 "$dir/bench.err") (server log: $dir/server.log)"
  broker_cpu=$(awk -v a="$cpu0" -v b="$(cpu_seconds "$pid")" 'BEGIN { printf "%.2f", b - a }')
  stop_broker "$pid"
  result_file=$dir/result.json
}

# --- 4. Rounds, the targets interleaved --------------------------------------
raw=$results/raw.jsonl
: >"$raw"
for round in $(seq 1 "$ROUNDS"); do
  for target in $TARGETS; do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    say "round $round/$ROUNDS: $target ($COUNT events, load $load)"
    # Not in a subshell: the brokers must stay in `pids` for the trap.
    case $target in
      leat) run_leat "$round" ;;
      kafka-default | kafka-flush1) run_kafka "$round" "$target" ;;
      *) die "unknown target $target (leat, kafka-default, kafka-flush1)" ;;
    esac
    # Load averages (1, 5, 15 min) before the broker started and after it
    # stopped.
    "$python" -c 'import json, sys
r = json.load(open(sys.argv[6]))
r.update(target=sys.argv[1], round=int(sys.argv[2]),
         load_before=[float(x) for x in sys.argv[3].split()],
         load_after=[float(x) for x in sys.argv[4].split()],
         broker_cpu_s=float(sys.argv[5]))
print(json.dumps(r))' "$target" "$round" "$load" "$(cut -d' ' -f1-3 /proc/loadavg)" "$broker_cpu" \
      "$result_file" >>"$raw"
    tail -n 1 "$raw" >&2
  done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average after (1/5/15 min): $load_after" >>"$results/machine.txt"
"$python" bench/kafka/bench.py table --raw "$raw" --machine "$results/machine.txt" >"$results/table.md"
cat "$results/table.md"
say "results: $results"
