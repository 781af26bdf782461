#!/usr/bin/env bash
# recovery.sh BIN GB PROCS: how soon a host killed with SIGKILL commits
# again, with a large log and many deployed processors (issue 19).
#
# 1. Serves a fresh data directory and fills its stream `bulk` (8
#    partitions) with GB gibibytes of 64 KiB events (`leat produce`).
# 2. Applies a topology of PROCS `uppercase` processors, each
#    from `in` (4 partitions) to its own output, 2 instances each; waits
#    until all run and have processed a first round of events.
# 3. Appends 50,000 events to `in` and, while the processors work on them,
#    kills the server with SIGKILL.
# 4. Starts `leat serve` again on the same directory and prints:
#    answers   seconds until the server answers (it opens the log, recovers
#              it, and restores every deployment before it listens)
#    first     seconds until a processor has committed since the restart
#              (the sum of their `events_in` in /v1/status is above 0);
#              "<=answers" when one had by the time the server answered
#              (processors start as they are restored, before it listens)
#    caught-up seconds until every processor has consumed all of `in`
# Run from the repository root; COMPONENT overrides the component.
set -euo pipefail
bin=$(realpath "$1"); gb=$2; procs=$3
component=$(realpath "${COMPONENT:-guest-examples/out/uppercase.wasm}")
. "$(dirname "$0")/serve.sh"
# Events the processors committed since the server started (their
# `events_in`), and their lag.
progress() {
  curl -sf -H "Authorization: Bearer tok" "http://127.0.0.1:$port/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
done = sum(p["events_in"] for p in s["processors"])
lag = sum(p["lag"] for p in s["processors"])
print(done, lag)'
}

# 1. The bulk of the log.
serve; up
"$bin" stream create bulk --partitions 8 >/dev/null
t0=$(now)
python3 -c '
import sys
line = ("x" * 65535 + "\n").encode()
out = sys.stdout.buffer
for i in range(int(sys.argv[1]) * 16384):
    out.write(line)
' "$gb" | "$bin" produce bulk >/dev/null
filled=$(since "$t0")
size=$(du -sm "$dir/data" | cut -f1)

# 2. The processors.
{
  echo 'name = "recovery"'
  printf '[[streams]]\nname = "in"\npartitions = 4\n'
  for i in $(seq "$procs"); do printf '[[streams]]\nname = "out%s"\npartitions = 1\n' "$i"; done
  for i in $(seq "$procs"); do
    printf '[[processors]]\nname = "p%s"\ncomponent = "%s"\ninputs = ["in"]\noutputs = ["out%s"]\ninstances = 2\n' \
      "$i" "$component" "$i"
  done
} >"$dir/recovery.toml"
"$bin" topology apply "$dir/recovery.toml" >/dev/null
seq 1000 | "$bin" produce in >/dev/null
for _ in $(seq 1200); do
  read -r done lag < <(progress)
  [ "$done" -ge $((1000 * procs)) ] && [ "$lag" -eq 0 ] && break
  sleep 0.1
done

# 3. A kill in the middle of work: 50,000 more events for every processor.
seq 50000 | "$bin" produce in >/dev/null
kill -KILL $pid; wait $pid 2>/dev/null || true

# 4. The restart.
t0=$(now); serve; up; answers=$(since "$t0")
read -r done0 lag0 < <(progress)
first=
[ "$done0" -gt 0 ] && first="<=$answers"
for _ in $(seq 6000); do
  read -r done lag < <(progress)
  [ -z "$first" ] && [ "$done" -gt 0 ] && first=$(since "$t0")
  [ "$lag" -eq 0 ] && break
done
caught=$(since "$t0")
echo "$(basename "$bin") log=${size}MiB (filled in ${filled}s) procs=$procs committed-when-answering=$done0 lag-when-answering=$lag0 restart: answers=${answers}s first-commit=${first:-none}s caught-up=${caught}s"
