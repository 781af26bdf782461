#!/usr/bin/env bash
# idle-scale.sh BIN PROCS INSTANCES: an idle host with PROCS uppercase
# processors (INSTANCES each) over one 1,000-partition stream, deployed at
# once by one topology file (`leat topology apply`), caught up. Prints:
#   apply    seconds `leat topology apply` took, then until all run
#   cpu      % of one core over 20 s, idle, from /proc (and RSS then)
#   restart  after a SIGTERM and a new `leat serve` on the same data
#            directory: seconds until the server answers (it restores every
#            deployment before it accepts a connection), until every
#            processor is listed `running`, and RSS 5 s later
# Run from the repository root; COMPONENT overrides the component.
set -euo pipefail
bin=$(realpath "$1"); procs=$2; inst=$3
component=$(realpath "${COMPONENT:-guest-examples/out/uppercase.wasm}")
. "$(dirname "$0")/serve.sh"
running() {
  for _ in $(seq 1200); do
    n=$("$bin" processor list 2>/dev/null | awk -F'\t' '$2=="running"' | wc -l)
    [ "$n" -ge "$procs" ] && return
    sleep 0.1
  done
  echo "only $n of $procs processors running" >&2; exit 1
}
rss() { awk '/VmRSS/{print int($2/1024)}' /proc/$pid/status; }
ticks() { awk '{print $14+$15}' /proc/$pid/stat; }

{
  echo 'name = "idle"'
  printf '[[streams]]\nname = "in"\npartitions = 1000\n'
  for i in $(seq "$procs"); do printf '[[streams]]\nname = "out%s"\npartitions = 4\n' "$i"; done
  for i in $(seq "$procs"); do
    printf '[[processors]]\nname = "p%s"\ncomponent = "%s"\ninputs = ["in"]\noutputs = ["out%s"]\ninstances = %s\n' \
      "$i" "$component" "$i" "$inst"
  done
} >"$dir/idle.toml"

serve; up
t0=$(now); "$bin" topology apply "$dir/idle.toml" >/dev/null; applied=$(since "$t0")
running; all=$(since "$t0")
sleep 5
a=$(ticks); sleep 20; b=$(ticks); rss1=$(rss)
cpu=$(awk -v t=$((b - a)) 'BEGIN{printf "%.1f", t / 20}')

kill -TERM $pid; wait $pid 2>/dev/null || true
t0=$(now); serve; up; answers=$(since "$t0")
running; restored=$(since "$t0")
sleep 5; rss2=$(rss)
echo "$(basename "$bin") procs=$procs inst=$inst apply=${applied}s all-running=${all}s cpu=${cpu}% rss=${rss1}MiB restart: answers=${answers}s all-running=${restored}s rss=${rss2}MiB"
