#!/usr/bin/env bash
# Leat on Kafka against Kafka Streams 4.4 (issue 13), side by side on one
# Apache Kafka 4.4 broker on this machine: the same preloaded events, the
# same two processors (uppercase, word count), both exactly-once (EOS v2).
#
#   bash bench/kafka-streams/run.sh                          # 1,000,000 events, 3 rounds
#   COUNT=100000 ROUNDS=1 bash bench/kafka-streams/run.sh
#   LEAT_BASE=/path/to/an/older/leat SYSTEMS="leat leat-base kstreams" bash bench/kafka-streams/run.sh   # before / after too
#
# Each round runs every workload (WORKLOADS) on every system (SYSTEMS), the
# systems' order alternating from round to round (leat first in odd rounds),
# each run on fresh topics, a fresh consumer group / application id and a
# fresh state directory; measure.py measures it from outside (throughput,
# then latency at a fixed rate, then the outputs' check; see README.md).
# Results: bench/kafka-streams/results/<UTC time>-u<COUNT_UPPERCASE>-w<COUNT_WORD_COUNT>/ (machine.txt,
# raw.jsonl, table.md); logs: target/bench-kstreams/run-<UTC time>/ (removed
# after a run that finished, unless KEEP=1). Every process started here is
# stopped on exit, by its pid.
#
# Needs cargo, python3 (venv), Java 17+ and Maven. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
bench_name=bench-kstreams
# say, die, run, bench_cleanup:
# shellcheck source=bench/kafka/common.sh
source bench/kafka/common.sh

COUNT=${COUNT:-1000000}
# Per workload, when they should differ (word-count emits ~11 outputs an event).
COUNT_UPPERCASE=${COUNT_UPPERCASE:-$COUNT}
COUNT_WORD_COUNT=${COUNT_WORD_COUNT:-$COUNT}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-100}
PARTITIONS=${PARTITIONS:-4}
# Leat's instances = Kafka Streams' num.stream.threads.
INSTANCES=${INSTANCES:-2}
# Leat's batch_size (events per guest call and per transaction): its default.
BATCH=${BATCH:-1000}
WORKLOADS=${WORKLOADS:-uppercase word-count}
SYSTEMS=${SYSTEMS:-leat kstreams}
# With `leat-base` in SYSTEMS: another leat binary (say, one built from an
# earlier commit), run exactly as `leat` is, for a before / after in one run.
LEAT_BASE=${LEAT_BASE:-}
# The latency phase: events/s per workload, and its length.
RATE_UPPERCASE=${RATE_UPPERCASE:-5000}
RATE_WORD_COUNT=${RATE_WORD_COUNT:-1000}
LATENCY_SECONDS=${LATENCY_SECONDS:-30}
TIMEOUT=${TIMEOUT:-900}
KEEP=${KEEP:-0}
# 1: one uppercase run of the first system before round 1, not counted (see
# "Rounds" below); 0: none.
WARMUP=${WARMUP:-1}
# Leat's log filter (RUST_LOG) and extra arguments to `leat run`, for
# investigations: LEAT_LOG=warn,leat_on_kafka=debug prints each
# transaction's steps; LEAT_ARGS="--kafka-setting linger.ms=1" tries a
# client setting.
LEAT_LOG=${LEAT_LOG:-warn,leat_on_kafka=info}
LEAT_ARGS=${LEAT_ARGS:-}

work=$repo/target/bench-kstreams
python=$repo/target/kafka-clients/venv/bin/python
cargo_target=${CARGO_TARGET_DIR:-$repo/target}
leat=$cargo_target/release/leat
app=$repo/bench/kafka-streams
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$app/results/$stamp-u$COUNT_UPPERCASE-w$COUNT_WORD_COUNT
run_dir=$work/run-$stamp
mkdir -p "$run_dir"

# The broker, the measuring client (`run`) and the system the client
# started (its pid file), stopped on any exit (bench/kafka/common.sh).
system_pid_file=$run_dir/system.pid
cleanup() {
  local status=$? system
  system=$(cat "$system_pid_file" 2>/dev/null) || system=
  if [ -n "$system" ]; then pids+=("$system"); fi
  bench_cleanup "$status" bench-kstreams
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. What the run needs -------------------------------------------------
for v in COUNT COUNT_UPPERCASE COUNT_WORD_COUNT ROUNDS SIZE PARTITIONS INSTANCES BATCH LATENCY_SECONDS TIMEOUT RATE_UPPERCASE RATE_WORD_COUNT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
for s in $SYSTEMS; do
  case $s in
    leat | kstreams) ;;
    leat-base) [ -x "$LEAT_BASE" ] || die "SYSTEMS has leat-base: LEAT_BASE must be a leat binary, not '$LEAT_BASE'" ;;
    *) die "unknown system $s in SYSTEMS (leat, leat-base, kstreams)" ;;
  esac
done
for w in $WORKLOADS; do
  case $w in uppercase | word-count) ;; *) die "unknown workload $w in WORKLOADS (uppercase, word-count)" ;; esac
  case " $SYSTEMS " in
    *" leat "* | *" leat-base "*)
      [ -f "guest-examples/out/$w.wasm" ] ||
        die "guest-examples/out/$w.wasm is missing: bash scripts/build-guests.sh"
      ;;
  esac
done

say "clients: scripts/setup-kafka-clients.sh"
run bash scripts/setup-kafka-clients.sh >"$run_dir/setup-clients.log" 2>&1 ||
  die "scripts/setup-kafka-clients.sh failed: see $run_dir/setup-clients.log"
say "Kafka Streams application: mvn package (bench/kafka-streams)"
run mvn -q -B -f "$app/pom.xml" package -DskipTests >"$run_dir/mvn.log" 2>&1 ||
  die "mvn package failed: see $run_dir/mvn.log"
case " $SYSTEMS " in
  *" leat "*)
    say "leat: cargo build --release -p leat --bin leat (target: $cargo_target)"
    run cargo build --release -p leat --bin leat >"$run_dir/cargo.log" 2>&1 ||
      die "cargo build failed: see $run_dir/cargo.log"
    ;;
esac

say "one Kafka broker: scripts/kafka-broker.sh start"
bootstrap=$(KAFKA_DIR=$run_dir/broker bash scripts/kafka-broker.sh start 2>"$run_dir/broker-start.log") ||
  die "the broker did not start: $(tail -n 5 "$run_dir/broker-start.log")"
broker_pid=$(cat "$run_dir/broker/pid")
pids+=("$broker_pid")
lib=$(bash scripts/kafka-broker.sh fetch 2>/dev/null)
kafka_version=$(find "$lib" -name 'kafka_2.13-*.jar' | sed 's/.*kafka_2\.13-\(.*\)\.jar/\1/')

# --- 2. Machine ------------------------------------------------------------
mkdir -p "$results"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git describe --always --dirty --exclude '*' 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "cpu: $(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)"
  echo "ram: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "java: $(java -version 2>&1 | head -n 1)"
  echo "kafka broker: $kafka_version (one KRaft node), kafka-streams: $(find "$app/target/lib" -name 'kafka-streams-*.jar' | sed 's/.*kafka-streams-\(.*\)\.jar/\1/')"
  echo "client: $("$python" -c 'import importlib.metadata as m, confluent_kafka as c; print("confluent-kafka", m.version("confluent-kafka"), "librdkafka", c.libversion()[0])')"
  echo "count: $COUNT_UPPERCASE (uppercase), $COUNT_WORD_COUNT (word-count), size: $SIZE, partitions: $PARTITIONS, instances/threads: $INSTANCES, leat batch_size: $BATCH, rounds: $ROUNDS"
  echo "latency phase: $LATENCY_SECONDS s at $RATE_UPPERCASE events/s (uppercase), $RATE_WORD_COUNT events/s (word-count)"
  echo "load average before (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$results/machine.txt"
cat "$results/machine.txt" >&2

# --- 3. One run: one system, one workload ------------------------------------
# Writes Leat's topology file for a run: the shape of tests/tests/e2e/on_kafka.rs.
leat_topology() {
  local file=$1 workload=$2 input=$3 output=$4 processor=$5
  cat >"$file" <<EOF
name = "$processor"

[[streams]]
name = "$input"
partitions = $PARTITIONS

[[streams]]
name = "$output"
partitions = $PARTITIONS

[[processors]]
name = "$processor"
component = "$repo/guest-examples/out/$workload.wasm"
inputs = ["$input"]
outputs = ["$output"]
instances = $INSTANCES
batch_size = $BATCH
EOF
}

raw=$results/raw.jsonl
: >"$raw"
one_run() {
  local round=$1 workload=$2 system=$3
  local name=$system-$workload-r$round-$RANDOM
  local dir=$run_dir/$name rate=$RATE_UPPERCASE count=$COUNT_UPPERCASE ready
  mkdir -p "$dir"
  if [ "$workload" = word-count ]; then
    rate=$RATE_WORD_COUNT
    count=$COUNT_WORD_COUNT
  fi
  local cmd=()
  case $system in
    leat | leat-base)
      local binary=$leat
      [ "$system" = leat-base ] && binary=$LEAT_BASE
      leat_topology "$dir/topology.toml" "$workload" "in-$name" "out-$name" "$name"
      ready="kafka assigned partitions"
      cmd=(env "LEAT_DATA_DIR=$dir/data" "RUST_LOG=$LEAT_LOG" "$binary" run "$dir/topology.toml"
        --kafka-bootstrap "$bootstrap" --kafka-host-id bench --kafka-state-dir "$dir/state")
      # Extra arguments, e.g. LEAT_ARGS="--kafka-setting linger.ms=1".
      # shellcheck disable=SC2206
      if [ -n "$LEAT_ARGS" ]; then cmd+=($LEAT_ARGS); fi
      ;;
    kstreams)
      ready="kstreams: RUNNING"
      cmd=(java -cp "$app/target/kstreams-bench.jar:$app/target/lib/*" dev.leat.bench.KStreamsBench
        "$workload" "$bootstrap" "$name" "in-$name" "out-$name" "$INSTANCES" "$dir/state")
      ;;
  esac
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local out=$raw
  if [ "$round" = 0 ]; then
    out=$run_dir/warmup.jsonl
    say "warm-up, not counted: $system, $workload ($count events, load $load)"
  else
    say "round $round/$ROUNDS: $system, $workload ($count events, load $load)"
  fi
  local status=0
  run "$python" "$app/measure.py" round --bootstrap "$bootstrap" --workload "$workload" \
    --input "in-$name" --output "out-$name" --partitions "$PARTITIONS" --count "$count" --size "$SIZE" \
    --rate "$rate" --latency-seconds "$LATENCY_SECONDS" --timeout "$TIMEOUT" \
    --log "$dir/system.log" --ready "$ready" --group "$name" --broker-pid "$broker_pid" --pid-file "$system_pid_file" \
    -- "${cmd[@]}" >"$dir/result.json" 2>"$dir/measure.err" || status=$?
  rm -f "$system_pid_file"
  # 3: the outputs were wrong (recorded as such, not as a figure); else a failure.
  if [ "$status" != 0 ] && [ "$status" != 3 ]; then
    die "measure.py ($system, $workload) failed: $(tail -n 5 "$dir/measure.err") (log: $dir/system.log)"
  fi
  [ "$status" = 3 ] && say "WRONG OUTPUT: $system, $workload, round $round: $(tail -n 1 "$dir/measure.err")"
  "$python" -c 'import json, sys
r = json.load(open(sys.argv[1]))
r.update(system=sys.argv[2], round=int(sys.argv[3]),
         load_before=[float(x) for x in sys.argv[4].split()],
         load_after=[float(x) for x in sys.argv[5].split()])
print(json.dumps(r))' "$dir/result.json" "$system" "$round" "$load" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"
  tail -n 1 "$out" >&2
}

# --- 4. Rounds ----------------------------------------------------------------
read -r -a systems <<<"$SYSTEMS"
# One uppercase run of the first system first, not counted: the broker's JVM
# is cold after its start, and the first run of round 1 paid for it
# (2026-12-03, 3 runs of 3: at the fixed rate, the first run's transactions
# waited 11 to 22 ms (medians) for their acknowledgements, the next Leat's
# 0.1 to 11 ms; in round 2 the same binary, run last, waited as long as the
# others).
if [ "$WARMUP" = 1 ]; then
  one_run 0 uppercase "${systems[0]}"
fi
for round in $(seq 1 "$ROUNDS"); do
  order=("${systems[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#systems[@]} - 1; i >= 0; i--)); do order+=("${systems[i]}"); done
  fi
  for workload in $WORKLOADS; do
    for system in "${order[@]}"; do
      one_run "$round" "$workload" "$system"
    done
  done
done

echo "load average after (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/machine.txt"
"$python" "$app/measure.py" table --raw "$raw" --machine "$results/machine.txt" >"$results/table.md"
cat "$results/table.md"
say "results: $results"
