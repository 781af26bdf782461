# Sourced by scripts/kafka-broker.sh and bench/kafka/run.sh (not run): the
# start and stop of a server process.
#
#   wait_for_log PID LOG PATTERN TIMEOUT WHAT || die "$wait_error"
#
# Waits until the file LOG holds a line matching PATTERN (grep), checking
# every 0.1 s, and returns 0. Returns 1 if process PID (WHAT, e.g. "the
# broker") exits first, 2 after TIMEOUT seconds; then LOG's last 30 lines
# are on standard error and `wait_error` says what happened.
wait_for_log() {
  local pid=$1 log=$2 pattern=$3 timeout=$4 what=$5 i
  wait_error=
  for i in $(seq 1 $((timeout * 10))); do
    if grep -q "$pattern" "$log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2 || true
      wait_error="$what exited before it was ready (log: $log)"
      return 1
    fi
    sleep 0.1
  done
  tail -n 30 "$log" >&2 || true
  wait_error="$what was not ready after ${timeout}s (log: $log)"
  return 2
}

#   stop_process PID
#
# Stops process PID: SIGTERM, then SIGKILL if it still runs 30 s later;
# returns once it is gone (at once if it is not running).
stop_process() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
