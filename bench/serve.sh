# Sourced by the bench scripts that drive a `leat serve`: with `bin` set to
# the leat binary, makes a fresh data directory and port, points the client
# commands at them, and defines:
#   now / since T   a timestamp, and the seconds since one (two decimals)
#   serve           starts `leat serve` on the directory (its pid in `pid`;
#                   killed, and the directory removed, when the script exits)
#   up              waits until the server answers (10 ms polls, 60 s)
dir=$(mktemp -d); port=$((17000 + RANDOM % 1000))
export LEAT_SERVER=127.0.0.1:$port LEAT_TOKEN=tok
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
serve() {
  "$bin" serve --data-dir "$dir/data" --listen 127.0.0.1:$port --token tok >>"$dir/out" 2>&1 &
  pid=$!
}
up() { for _ in $(seq 6000); do "$bin" status >/dev/null 2>&1 && return; sleep 0.01; done; echo "server not up" >&2; exit 1; }
