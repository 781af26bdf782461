#!/usr/bin/env bash
# Installs the real Kafka clients the tests drive (tests/tests/e2e/kafka/),
# idempotently, from the package registries:
#  - kcat (librdkafka), Debian's package, with apt-get when missing;
#  - confluent-kafka, kafka-python and aiokafka (tests/kafka-clients/
#    requirements.txt) in a virtualenv, target/kafka-clients/venv;
#  - the Java client: tests/kafka-clients/java built with Maven (kafka-clients
#    from Maven Central) into target/kafka-clients/java.
# The tests look for them there and fail, naming this script, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup-kafka-clients: $*"; }
die() {
  echo "setup-kafka-clients: error: $*" >&2
  exit 1
}
out=target/kafka-clients
mkdir -p "$out"

if ! command -v kcat >/dev/null 2>&1; then
  bash scripts/apt-install.sh kcat || die "kcat is missing: install kcat (librdkafka's command-line client)"
fi
say "kcat: $(kcat -V 2>&1 | sed -n "s/^Version \([^ ]*\).*librdkafka \([^ ]*\).*/\1 (librdkafka \2)/p")"

# Python clients: reinstalled only when the requirements change.
req=tests/kafka-clients/requirements.txt
venv=$out/venv
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
  command -v python3 >/dev/null 2>&1 || die "python3 is missing: install Python 3.9 or newer"
  rm -rf "$venv"
  say "python3 -m venv $venv; pip install -r $req"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" || die "pip install -r $req failed"
  cp "$req" "$venv/requirements.txt"
fi
say "python: $("$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka; print("confluent-kafka", confluent_kafka.__version__, "(librdkafka", confluent_kafka.libversion()[0] + "), kafka-python", kafka.__version__, "aiokafka", aiokafka.__version__)')"

# The Java client: rebuilt only when its sources change.
java_src=tests/kafka-clients/java
if [ -f "$java_src/pom.xml" ]; then
  command -v mvn >/dev/null 2>&1 || die "mvn is missing: install Maven and Java 17 (Debian: apt-get install maven openjdk-17-jdk-headless)"
  stamp=$(cat "$java_src/pom.xml" $(find "$java_src/src" -type f | sort) | sha256sum | cut -c1-16)
  if [ "$(cat "$out/java/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$out/java"
    say "mvn package ($java_src)"
    mvn -q -B -f "$java_src/pom.xml" -DoutputDirectory="$PWD/$out/java/lib" \
      package dependency:copy-dependencies >"$out/mvn.log" 2>&1 ||
      die "mvn package failed: see $out/mvn.log"
    cp "$java_src"/target/*.jar "$out/java/lib/"
    echo "$stamp" >"$out/java/stamp"
  fi
  say "java: $(ls "$out/java/lib" | grep -c '\.jar$') jars in $out/java/lib"
fi
say "ok"
