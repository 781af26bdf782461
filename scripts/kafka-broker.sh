#!/usr/bin/env bash
# One Apache Kafka 4.4 broker (KRaft: broker and controller in one JVM) on
# this machine, for the tests and for trying Leat on Kafka. Its jars come
# from Maven Central (bench/kafka/pom.xml, `mvn dependency:copy-dependencies`,
# fetched once); needs Java 17+, Maven and python3 (free ports).
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
# Environment:
#   LEAT_KAFKA_HOME  where the jars are kept (default: target/kafka of this checkout)
#   KAFKA_DIR        the broker's directory: data, logs, pid, address
#                    (default: $LEAT_KAFKA_HOME/broker); one broker per directory
#   KAFKA_EXTRA      more server.properties lines (newline-separated)
#   KAFKA_HEAP       the JVM's heap (default 1G)
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

running() {
  local pid
  pid=$(cat "$dir/pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {
  if running && [ -s "$dir/address" ]; then
    cat "$dir/address"
    return 0
  fi
  fetch
  rm -rf "$dir"
  mkdir -p "$dir/logs"
  local port cport t0=$SECONDS
  port=$(free_port)
  cport=$(free_port)
  {
    echo "process.roles=broker,controller"
    echo "node.id=1"
    echo "controller.quorum.voters=1@127.0.0.1:$cport"
    echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
    echo "controller.listener.names=CONTROLLER"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    echo "log.dirs=$dir/logs"
    # Kafka's config/server.properties for one node: every internal topic
    # (offsets, transaction state, share state) with one replica and a
    # minimum ISR of one, or transactions and groups cannot work here.
    echo "num.partitions=1"
    echo "offsets.topic.replication.factor=1"
    echo "share.coordinator.state.topic.replication.factor=1"
    echo "share.coordinator.state.topic.min.isr=1"
    echo "transaction.state.log.replication.factor=1"
    echo "transaction.state.log.min.isr=1"
    # A group's first rebalance waits 3 s by default for more members:
    # tests start their members together, so no wait.
    echo "group.initial.rebalance.delay.ms=0"
    if [ -n "${KAFKA_EXTRA:-}" ]; then
      printf '%s\n' "$KAFKA_EXTRA"
    fi
  } >"$dir/server.properties"
  local cp="$lib/*" log4j="-Dlog4j2.configurationFile=$home/log4j2.properties"
  local cluster
  cluster=$(java -cp "$cp" "$log4j" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  [ -n "$cluster" ] || die "kafka.tools.StorageTool random-uuid printed nothing"
  java -cp "$cp" "$log4j" kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" \
    >"$dir/format.log" 2>&1 || die "kafka.tools.StorageTool format failed: $(tail -n 5 "$dir/format.log")"
  local heap=${KAFKA_HEAP:-1G}
  # The JVM settings of Kafka's start scripts. Its own session (setsid): a
  # Ctrl-C of the shell that started it does not reach it; `stop` does.
  setsid java "-Xmx$heap" "-Xms$heap" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "$log4j" -cp "$cp" kafka.Kafka "$dir/server.properties" </dev/null >"$dir/server.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/pid"
  local i
  for i in $(seq 1 $((START_TIMEOUT * 10))); do
    if grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; then
      echo "127.0.0.1:$port" >"$dir/address"
      say "broker (pid $pid) at 127.0.0.1:$port, started in $((SECONDS - t0)) s; log: $dir/server.log"
      echo "127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/server.log" >&2 || true
      die "the broker exited before it was ready (log: $dir/server.log)"
    fi
    sleep 0.1
  done
  tail -n 30 "$dir/server.log" >&2 || true
  kill "$pid" 2>/dev/null || true
  die "the broker was not ready after ${START_TIMEOUT}s (log: $dir/server.log)"
}

stop() {
  local pid i
  pid=$(cat "$dir/pid" 2>/dev/null) || pid=
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
      if [ "$i" = 300 ]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    say "broker (pid $pid) stopped"
  fi
  rm -f "$dir/pid" "$dir/address"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  address)
    running && [ -s "$dir/address" ] || die "no broker running in $dir: bash scripts/kafka-broker.sh start"
    cat "$dir/address"
    ;;
  fetch)
    fetch
    echo "$lib"
    ;;
  *) die "usage: scripts/kafka-broker.sh start|stop|address|fetch" ;;
esac
