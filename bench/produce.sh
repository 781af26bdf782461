#!/usr/bin/env bash
# produce.sh BIN [EVENTS] [ROUNDS]: `leat produce` through the HTTP API of a
# fresh `leat serve` (release build BIN): EVENTS lines of 100 bytes (default
# 1,000,000) into a 2-partition durable stream, ROUNDS times (default 3) on
# the same server. Prints, per round: the seconds `leat produce` took, its
# events/s, and the CPU seconds of the server and of the client in that
# round (from /proc and time). Run from the repository root.
set -euo pipefail
bin=$(realpath "$1"); events=${2:-1000000}; rounds=${3:-3}
. "$(dirname "$0")/serve.sh"
ticks() { awk '{print $14+$15}' /proc/$pid/stat; }
hz=$(getconf CLK_TCK)

# 100 bytes a line with its newline, each line different.
awk -v n="$events" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' >"$dir/events.txt"

serve; up
"$bin" stream create s --partitions 2 >/dev/null
printf '%-6s %9s %12s %11s %11s\n' round seconds events/s server-cpu client-cpu
for r in $(seq "$rounds"); do
  before=$(ticks)
  t0=$(now)
  client=$( { /usr/bin/time -f '%U %S' "$bin" produce s <"$dir/events.txt" >/dev/null; } 2>&1 | tail -1)
  took=$(since "$t0")
  server=$(awk -v a="$before" -v b="$(ticks)" -v hz="$hz" 'BEGIN{printf "%.2f", (b-a)/hz}')
  printf '%-6s %9s %12.0f %11s %11.2f\n' "$r" "$took" "$(awk -v n="$events" -v s="$took" 'BEGIN{print n/s}')" \
    "$server" "$(echo "$client" | awk '{print $1+$2}')"
done
