#!/usr/bin/env bash
# idle.sh BIN PROCS INSTANCES: CPU% of one core and RSS of an idle host with
# PROCS uppercase processors (INSTANCES each) over one 1,000-partition stream,
# caught up, measured over 20 s from /proc (run from the repository root).
set -euo pipefail
bin=$1; procs=$2; inst=$3
dir=$(mktemp -d); port=$((17000 + RANDOM % 1000))
"$bin" serve --data-dir "$dir" --listen 127.0.0.1:$port --token tok >"$dir/out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
export LEAT_SERVER=127.0.0.1:$port LEAT_TOKEN=tok
for _ in $(seq 50); do "$bin" status >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" stream create in --partitions 1000 >/dev/null
for i in $(seq "$procs"); do
  "$bin" stream create "out$i" --partitions 4 >/dev/null
  "$bin" deploy "${COMPONENT:-guest-examples/out/uppercase.wasm}" --name "p$i" --input in --output "out$i" --instances "$inst" >/dev/null
done
sleep 5
t() { awk '{print $14+$15}' /proc/$pid/stat; }
a=$(t); sleep 20; b=$(t)
rss=$(awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status)
echo "$(basename "$bin") procs=$procs inst=$inst cpu=$(( (b-a) * 100 / 20 / 100 ))% (ticks $((b-a)) in 20 s) rss=${rss}MiB"
