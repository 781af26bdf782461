#!/usr/bin/env bash
# queue-mode.sh BIN EVENTS INSTANCES [RUNS] [BATCH]: EVENTS events of 100 bytes
# on a 1-partition stream, consumed by the uppercase example in stream mode
# (1 instance: one partition has one owner) and in queue mode (INSTANCES
# instances), alternately RUNS times (default 3), each run a fresh `leat
# serve`. Prints, per run, events/s from the deploy to the last input
# committed (polled every 50 ms) and the batch latency (guest call to
# durable commit) the server reports: mean and p99. BATCH (default 250)
# events per guest call in both modes: a queue group hands out at most 2,000
# events of a partition at once, so 8 batches of 250 fit.
# Run from the repository root, after scripts/build-guests.sh.
set -euo pipefail
bin=$1; events=$2; inst=$3; runs=${4:-3}; batch=${5:-250}
value=$(printf 'x%.0s' $(seq 93))
input=$(mktemp)
trap 'rm -f "$input"' EXIT
for i in $(seq "$events"); do printf 'k%06d\t%s\n' "$i" "$value"; done >"$input"

one() { # MODE INSTANCES
  local dir port pid t0 t1 n
  dir=$(mktemp -d); port=$((18000 + RANDOM % 1000))
  "$bin" serve --data-dir "$dir" --listen 127.0.0.1:$port --token tok >"$dir/out" 2>&1 &
  pid=$!
  export LEAT_SERVER=127.0.0.1:$port LEAT_TOKEN=tok
  for _ in $(seq 100); do "$bin" status >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin" stream create in --partitions 1 >/dev/null
  "$bin" stream create out --partitions 1 >/dev/null
  "$bin" produce in --format kv <"$input" >/dev/null
  t0=$(date +%s.%N)
  "$bin" deploy guest-examples/out/uppercase.wasm --name up --input in --output out \
    --mode "$1" --instances "$2" --batch-size "$batch" >/dev/null
  while :; do
    n=$("$bin" processor status up | sed -n 's/.*events in \([0-9]*\),.*/\1/p')
    [ "${n:-0}" -ge "$events" ] && break
    sleep 0.05
  done
  t1=$(date +%s.%N)
  latency=$("$bin" processor status up | sed -n 's/.*batch latency: //p')
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
  echo "$1 x$2: $(echo "$events / ($t1 - $t0)" | bc) events/s, batch latency $latency"
}

echo "queue-mode: $events events, 1 partition, batches of $batch, $runs runs"
for _ in $(seq "$runs"); do
  one stream 1
  one queue "$inst"
done
