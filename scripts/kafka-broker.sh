#!/usr/bin/env bash
# Apache Kafka 4.4 on this machine (KRaft), for the tests and for trying Leat
# on Kafka: one node (broker and controller in one JVM), or a cluster of
# KAFKA_NODES such nodes (each a broker and a voter of the controller
# quorum). Its jars come from Maven Central (bench/kafka/pom.xml, `mvn
# dependency:copy-dependencies`, fetched once); needs Java 17+, Maven and
# python3 (free ports).
#
#   bash scripts/kafka-broker.sh start   # prints the bootstrap address, e.g. 127.0.0.1:40123
#   bash scripts/kafka-broker.sh stop
#   bash scripts/kafka-broker.sh address # the running broker's address
#   bash scripts/kafka-broker.sh fetch   # only the jars; prints their directory
#
#   export LEAT_TEST_KAFKA_BOOTSTRAP=$(bash scripts/kafka-broker.sh start)
#
# `start` is idempotent: with a broker of this directory running, it prints
# its address; otherwise it starts one on fresh storage and free ports and
# returns once the broker answers. Logs go to standard error, the address
# alone to standard output.
#
# A cluster (scripts/kafka-cluster-check.sh uses one):
#
#   KAFKA_NODES=3 KAFKA_DIR=target/kafka/cluster bash scripts/kafka-broker.sh start
#       # prints the 3 addresses, comma-separated; each node in KAFKA_DIR/node-I
#   KAFKA_DIR=target/kafka/cluster bash scripts/kafka-broker.sh kill-node 2    # SIGKILL node 2
#   KAFKA_DIR=target/kafka/cluster bash scripts/kafka-broker.sh start-node 2   # restart it, same storage
#   KAFKA_DIR=target/kafka/cluster bash scripts/kafka-broker.sh stop           # every node
#
# With 3 nodes or more, the internal topics (offsets, transaction state,
# share state) have 3 replicas and a minimum ISR of 2, and so do the
# topics created without settings of their own (default.replication.factor,
# min.insync.replicas): one node may fail without losing an acknowledged
# write or stopping transactions. With fewer, 1 replica each.
#
# Environment:
#   LEAT_KAFKA_HOME  where the jars are kept (default: target/kafka of this checkout)
#   KAFKA_DIR        the broker's directory: data, logs, pid, address
#                    (default: $LEAT_KAFKA_HOME/broker); one broker (or cluster) per directory
#   KAFKA_NODES      nodes of the cluster `start` starts (default 1)
#   KAFKA_EXTRA      more server.properties lines (newline-separated), on every node
#   KAFKA_HEAP       each JVM's heap (default 1G for one node, 512M each in a cluster)
#   START_TIMEOUT    seconds to wait for the broker (default 120)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
home=${LEAT_KAFKA_HOME:-$repo/target/kafka}
lib=$home/lib
dir=${KAFKA_DIR:-$home/broker}
START_TIMEOUT=${START_TIMEOUT:-120}

say() { echo "kafka-broker: $*" >&2; }
die() {
  echo "kafka-broker: error: $*" >&2
  exit 1
}

fetch() {
  command -v java >/dev/null 2>&1 || die "java is missing: install Java 17+ (Debian: apt-get install openjdk-17-jdk-headless)"
  command -v mvn >/dev/null 2>&1 || die "mvn is missing: install Maven (Debian: apt-get install maven)"
  local stamp
  stamp=$(sha256sum "$repo/bench/kafka/pom.xml" | cut -c1-16)
  if [ "$(cat "$lib/stamp" 2>/dev/null)" != "$stamp" ]; then
    say "Apache Kafka's jars: mvn dependency:copy-dependencies (bench/kafka/pom.xml) into $lib"
    mkdir -p "$home"
    rm -rf "$lib"
    mvn -q -B -f "$repo/bench/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib" \
      >"$home/mvn.log" 2>&1 || die "mvn dependency:copy-dependencies failed: see $home/mvn.log"
    echo "$stamp" >"$lib/stamp"
  fi
  # log4j2: INFO to standard output (redirected to the broker's log file).
  cat >"$home/log4j2.properties" <<'PROPS'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
PROPS
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_log PID LOG PATTERN TIMEOUT WHAT: until LOG holds PATTERN;
# stop_process PID: SIGTERM, SIGKILL 30 s later.
. "$repo/scripts/lib/processes.sh"

# The directory of node $1: the broker's directory itself for one node.
node_dir() {
  if [ -d "$dir/node-$1" ] || [ "${KAFKA_NODES:-1}" != 1 ]; then
    echo "$dir/node-$1"
  else
    echo "$dir"
  fi
}

# The nodes of the broker in $dir, from its `nodes` file.
nodes() { seq 1 "$(cat "$dir/nodes" 2>/dev/null || echo 1)"; }

node_running() {
  local pid
  pid=$(cat "$(node_dir "$1")/pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

running() {
  local i
  [ -s "$dir/address" ] || return 1
  for i in $(nodes); do node_running "$i" || return 1; done
}

# Starts node $1 from its server.properties and storage; returns once it
# answers. Its own session (setsid): a Ctrl-C of the shell that started it
# does not reach it; `stop` does.
launch() {
  local ndir t0=$SECONDS
  ndir=$(node_dir "$1")
  local heap=${KAFKA_HEAP:-$([ "$(nodes | wc -l)" = 1 ] && echo 1G || echo 512M)}
  # The JVM settings of Kafka's start scripts.
  setsid java "-Xmx$heap" "-Xms$heap" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$home/log4j2.properties" -cp "$lib/*" kafka.Kafka "$ndir/server.properties" \
    </dev/null >"$ndir/server.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$ndir/pid"
  if ! wait_for_log "$pid" "$ndir/server.log" "Kafka Server started" "$START_TIMEOUT" "node $1"; then
    kill "$pid" 2>/dev/null || true
    die "$wait_error"
  fi
  say "node $1 (pid $pid) at $(cat "$ndir/address"), started in $((SECONDS - t0)) s; log: $ndir/server.log"
}

start() {
  if running; then
    cat "$dir/address"
    return 0
  fi
  fetch
  stop 2>/dev/null
  local n=${KAFKA_NODES:-1}
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "KAFKA_NODES must be a positive integer, not '$n'"
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "$n" >"$dir/nodes"
  local i ports=() cports=() formats=() voters= addresses=
  for i in $(seq 1 "$n"); do
    ports[i]=$(free_port)
    cports[i]=$(free_port)
    voters+=${voters:+,}$i@127.0.0.1:${cports[i]}
    addresses+=${addresses:+,}127.0.0.1:${ports[i]}
  done
  # Kafka's config/server.properties for one node: every internal topic
  # (offsets, transaction state, share state) with one replica and a
  # minimum ISR of one, or transactions and groups cannot work there. From
  # 3 nodes: 3 replicas, at least 2 in sync.
  local rf=1 isr=1
  if [ "$n" -ge 3 ]; then rf=3 isr=2; fi
  local cp="$lib/*" log4j="-Dlog4j2.configurationFile=$home/log4j2.properties"
  local cluster
  cluster=$(java -cp "$cp" "$log4j" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  [ -n "$cluster" ] || die "kafka.tools.StorageTool random-uuid printed nothing"
  for i in $(seq 1 "$n"); do
    local ndir
    ndir=$(node_dir "$i")
    mkdir -p "$ndir/logs"
    {
      echo "process.roles=broker,controller"
      echo "node.id=$i"
      echo "controller.quorum.voters=$voters"
      echo "listeners=PLAINTEXT://127.0.0.1:${ports[i]},CONTROLLER://127.0.0.1:${cports[i]}"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:${ports[i]}"
      echo "controller.listener.names=CONTROLLER"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
      echo "log.dirs=$ndir/logs"
      echo "num.partitions=1"
      echo "default.replication.factor=$rf"
      echo "min.insync.replicas=$isr"
      echo "offsets.topic.replication.factor=$rf"
      echo "share.coordinator.state.topic.replication.factor=$rf"
      echo "share.coordinator.state.topic.min.isr=$isr"
      echo "transaction.state.log.replication.factor=$rf"
      echo "transaction.state.log.min.isr=$isr"
      # A group's first rebalance waits 3 s by default for more members:
      # tests start their members together, so no wait.
      echo "group.initial.rebalance.delay.ms=0"
      if [ -n "${KAFKA_EXTRA:-}" ]; then
        printf '%s\n' "$KAFKA_EXTRA"
      fi
    } >"$ndir/server.properties"
    echo "127.0.0.1:${ports[i]}" >"$ndir/address"
    # The nodes' storage formatted side by side (a JVM start each).
    java -cp "$cp" "$log4j" kafka.tools.StorageTool format -t "$cluster" -c "$ndir/server.properties" \
      >"$ndir/format.log" 2>&1 &
    formats[i]=$!
  done
  for i in $(seq 1 "$n"); do
    wait "${formats[i]}" ||
      die "kafka.tools.StorageTool format failed: $(tail -n 5 "$(node_dir "$i")/format.log")"
  done
  # The nodes wait for each other (the controller quorum): started
  # together, waited for one after the other.
  local t0=$SECONDS
  for i in $(seq 1 "$n"); do launch "$i" & done
  local failed=0
  for i in $(seq 1 "$n"); do wait -n || failed=1; done
  if [ "$failed" = 1 ]; then
    stop 2>/dev/null
    die "the broker did not start (logs: $dir)"
  fi
  echo "$addresses" >"$dir/address"
  say "$n node(s) at $addresses, started in $((SECONDS - t0)) s"
  echo "$addresses"
}

stop() {
  local i ndir pid
  for i in $(nodes); do
    ndir=$(node_dir "$i")
    pid=$(cat "$ndir/pid" 2>/dev/null) || pid=
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      stop_process "$pid"
      say "node $i (pid $pid) stopped"
    fi
    rm -f "$ndir/pid"
  done
  rm -f "$dir/address"
}

# The number $1 of a node of the running broker.
node_arg() {
  [ -f "$dir/nodes" ] || die "no broker in $dir"
  [[ ${1:-} =~ ^[1-9][0-9]*$ ]] && [ "$1" -le "$(cat "$dir/nodes")" ] ||
    die "no node '${1:-}' in $dir (1 to $(cat "$dir/nodes"))"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  address)
    running || die "no broker running in $dir: bash scripts/kafka-broker.sh start"
    cat "$dir/address"
    ;;
  fetch)
    fetch
    echo "$lib"
    ;;
  kill-node)
    node_arg "${2:-}"
    node_running "$2" || die "node $2 is not running"
    pid=$(cat "$(node_dir "$2")/pid")
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    say "node $2 (pid $pid) SIGKILLed"
    ;;
  start-node)
    node_arg "${2:-}"
    node_running "$2" && die "node $2 is running"
    launch "$2"
    ;;
  *) die "usage: scripts/kafka-broker.sh start|stop|address|fetch|kill-node I|start-node I" ;;
esac
