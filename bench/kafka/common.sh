# Shell helpers shared by the Kafka benchmarks (bench/kafka/run.sh,
# bench/kafka-streams/run.sh), sourced by them. They set `bench_name` (the
# prefix of their messages) before, and, before they exit, `work` (their
# directory under target/), `run_dir` (this run's logs), `results` (this
# run's results directory) and `KEEP`.

say() { echo "$bench_name: $*" >&2; }
die() {
  echo "$bench_name: error: $*" >&2
  exit 1
}

# The processes the script started (pids), stopped on exit, and the command
# it is waiting for (`run`).
pids=()
kid=

# On exit with status $1 (say NAME: $2): stops `kid` and `pids`; removes the
# logs of a run that finished (unless KEEP=1: the logs of a failed one are
# kept, for its error message); moves the results of a run that did not
# finish to $work/incomplete/, not to leave them with the finished ones.
bench_cleanup() {
  local status=$1 name=$2 pid
  for pid in $kid "${pids[@]+"${pids[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $kid "${pids[@]+"${pids[@]}"}"; do
    wait "$pid" 2>/dev/null || true
    # `wait` returns at once for a process that is not this shell's child
    # (the broker's JVM, started detached): wait until it is gone, up to
    # 30 s, or `rm` below meets it still writing its logs ("Directory not
    # empty", seen at the end of a Kafka Streams run).
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  pids=()
  if [ "$KEEP" != 1 ] && [ "$status" = 0 ]; then
    rm -rf "$run_dir"
  fi
  if [ "$status" != 0 ] && [ -d "$results" ] && [ ! -f "$results/table.md" ]; then
    echo "$name: the run did not finish; what it measured: $work/incomplete/${results##*/}, logs: $run_dir" >&2
    mkdir -p "$work/incomplete"
    rm -rf "$work/incomplete/${results##*/}"
    mv "$results" "$work/incomplete/" || true
  fi
}

# Runs a command in the background and waits for it: bash runs a trap only
# once the foreground command is done, but interrupts `wait` at once, so
# Ctrl-C (or a TERM) stops the run now, `bench_cleanup` killing the command.
run() {
  local status=0
  "$@" &
  kid=$!
  wait "$kid" || status=$?
  kid=
  return "$status"
}
