"""One benchmark round against one Kafka-protocol broker, with confluent-kafka.

    bench.py create --bootstrap ADDR --topic T --partitions N
    bench.py run --bootstrap ADDR --topic T --count N --size B [--token TOKEN]
    bench.py table --raw raw.jsonl... [--machine machine.txt...]

`create` makes the topic with the admin API (for Apache Kafka; run.sh makes
Leat's with `leat stream create`). `run` produces COUNT
events of SIZE bytes with acks=all, waits for every delivery report, then a
fresh consumer reads the topic's partitions from the beginning until it has
COUNT events; it prints one JSON object on standard output. With --token it
speaks SASL/PLAIN (password = the token), as Leat's listener requires.

Exits non-zero with the reason on standard error when anything fails: a
delivery error, a consume error, or a timeout.
"""

import argparse
import json
import os
import sys
import time
from array import array

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def fail(message):
    print(f"bench.py: {message}", file=sys.stderr)
    sys.exit(1)


def base_config(args):
    config = {"bootstrap.servers": args.bootstrap}
    if args.token:
        config.update(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "PLAIN",
                "sasl.username": "bench",
                "sasl.password": args.token,
            }
        )
    return config


def create(args):
    admin = AdminClient(base_config(args))
    futures = admin.create_topics(
        [NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)],
        operation_timeout=30,
        request_timeout=30,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=60)
        except Exception as e:  # noqa: BLE001 - reported and fatal
            fail(f"create topic {topic}: {e}")
    print(json.dumps({"created": args.topic, "partitions": args.partitions}))


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values))) - 1))
    return sorted_values[k]


def produce(args):
    config = base_config(args)
    config.update(
        {
            "acks": "all",
            "linger.ms": 5,
            # librdkafka's defaults, written out: 1 MB batches of at most
            # 10,000 messages, a local queue of 100,000 messages.
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 100_000,
            "compression.type": "none",
            # librdkafka's default, written out (both brokers serve
            # idempotent producers; this benchmark measures plain ones).
            "enable.idempotence": False,
            # Kafka's own partitioner (as Leat's and the Java client's).
            "partitioner": "murmur2_random",
        }
    )
    producer = Producer(config)
    latencies = array("d")
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            latencies.append(msg.latency())

    value = os.urandom(args.size)
    # Connect (metadata for the topic) before the clock starts.
    md = producer.list_topics(args.topic, timeout=30)
    tmd = md.topics.get(args.topic)
    if tmd is None or tmd.error is not None or len(tmd.partitions) == 0:
        fail(f"topic {args.topic} not found on {args.bootstrap}: {tmd and tmd.error}")
    partitions = len(tmd.partitions)

    cpu = time.process_time()
    start = time.perf_counter()
    deadline = start + args.timeout
    for _ in range(args.count):
        while True:
            try:
                producer.produce(args.topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
                if time.perf_counter() > deadline:
                    fail(f"produce timed out after {args.timeout}s")
        producer.poll(0)
        if errors:
            fail(f"delivery failed: {errors[0]}")
    remaining = producer.flush(max(1.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if remaining:
        fail(f"{remaining} messages not delivered after {args.timeout}s")
    if errors:
        fail(f"{len(errors)} deliveries failed, the first: {errors[0]}")
    if len(latencies) != args.count:
        fail(f"{len(latencies)} delivery reports for {args.count} messages")
    lat = sorted(latencies)
    return partitions, {
        "events": args.count,
        "seconds": elapsed,
        "events_per_s": args.count / elapsed,
        "mb_per_s": args.count * args.size / elapsed / 1e6,
        # This process's CPU time (Python and librdkafka's threads).
        "client_cpu_s": cpu,
        "latency_ms": {
            "p50": percentile(lat, 50) * 1e3,
            "p99": percentile(lat, 99) * 1e3,
            "p999": percentile(lat, 99.9) * 1e3,
            "max": lat[-1] * 1e3,
        },
    }


def consume(args, partitions):
    config = base_config(args)
    config.update(
        {
            # Required by librdkafka; the consumer is assigned its
            # partitions and never joins the group nor commits: a fresh
            # reader from the beginning, no group coordination measured.
            "group.id": f"bench-{os.getpid()}-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer = Consumer(config)
    cpu = time.process_time()
    start = time.perf_counter()
    consumer.assign([TopicPartition(args.topic, p, -2) for p in range(partitions)])  # -2: beginning
    deadline = start + args.timeout
    got = 0
    nbytes = 0
    first = None
    while got < args.count:
        if time.perf_counter() > deadline:
            fail(f"consume timed out after {args.timeout}s with {got} of {args.count} events")
        for msg in consumer.consume(num_messages=10_000, timeout=1.0):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"consume error: {err}")
            if first is None:
                first = time.perf_counter()
            got += 1
            nbytes += len(msg.value())
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    consumer.close()
    if nbytes != got * args.size:
        fail(f"consumed {nbytes} bytes for {got} events of {args.size} bytes")
    return {
        "events": got,
        "seconds": elapsed,
        "events_per_s": got / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
        "client_cpu_s": cpu,
        # From the first event on, without connecting and the first fetch.
        "first_event_s": first - start if first else None,
        "events_per_s_after_first": (got - 1) / (elapsed - (first - start))
        if first and elapsed > first - start
        else None,
    }


def run(args):
    partitions, produced = produce(args)
    consumed = consume(args, partitions)
    print(
        json.dumps(
            {
                "count": args.count,
                "size": args.size,
                "partitions": partitions,
                "produce": produced,
                "consume": consumed,
            }
        )
    )


def table(args):
    """The Markdown table of a run's raw.jsonl: medians, min-max, ratios."""
    import statistics

    rows = []
    for path in args.raw:
        run = os.path.basename(os.path.dirname(os.path.abspath(path)))
        for line in open(path):
            if line.strip():
                rows.append(dict(json.loads(line), run=run))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    targets = []
    for r in rows:
        if r["target"] not in targets:
            targets.append(r["target"])
    metrics = [
        ("produce events/s", lambda r: r["produce"]["events_per_s"], "{:,.0f}"),
        ("produce MB/s", lambda r: r["produce"]["mb_per_s"], "{:.1f}"),
        ("produce latency p50 (ms)", lambda r: r["produce"]["latency_ms"]["p50"], "{:.1f}"),
        ("produce latency p99 (ms)", lambda r: r["produce"]["latency_ms"]["p99"], "{:.1f}"),
        ("consume events/s", lambda r: r["consume"]["events_per_s"], "{:,.0f}"),
        ("consume events/s after the first", lambda r: r["consume"]["events_per_s_after_first"], "{:,.0f}"),
        # CPU: of the client (bench.py's process, each phase) and of the
        # broker's process while bench.py ran (both phases, from /proc).
        ("client CPU s, produce", lambda r: r["produce"].get("client_cpu_s"), "{:.2f}"),
        ("client CPU s, consume", lambda r: r["consume"].get("client_cpu_s"), "{:.2f}"),
        ("broker CPU s, produce + consume", lambda r: r.get("broker_cpu_s"), "{:.2f}"),
    ]
    medians = {}
    out = []
    if args.machine:
        for path in args.machine:
            out.append("```")
            out.extend(line.rstrip("\n") for line in open(path))
            out.append("```")
        out.append("")
    counts = sorted({r["count"] for r in rows})
    rounds = {t: sum(1 for r in rows if r["target"] == t) for t in targets}
    out.append(
        f"{', '.join(f'{c:,}' for c in counts)} events of {rows[0]['size']} bytes, "
        f"{rows[0]['partitions']} partitions, acks=all; "
        + ", ".join(f"{t}: {n} round{'s' if n != 1 else ''}" for t, n in rounds.items())
        + (f" (pooled from {len(runs)} runs: {', '.join(runs)})" if len(runs) > 1 else "")
        + ". Median (min–max)."
    )
    out.append("")
    out.append("| metric | " + " | ".join(targets) + " |")
    out.append("|---|" + "---|" * len(targets))
    for name, get, fmt in metrics:
        cells = []
        for t in targets:
            values = [v for v in (get(r) for r in rows if r["target"] == t) if v is not None]
            if not values:
                medians[(name, t)] = None
                cells.append("–")
                continue
            med = statistics.median(values)
            medians[(name, t)] = med
            cell = fmt.format(med)
            if len(values) > 1:
                cell += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
            if len(values) != rounds[t]:
                cell += f" [{len(values)} rounds]"
            cells.append(cell)
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if "leat" in targets:
        out.append("")
        out.append("Ratios of the medians, Leat / Kafka (throughput: higher is better for Leat; latency: lower is).")
        out.append("")
        others = [t for t in targets if t != "leat"]
        out.append("| metric | " + " | ".join(f"leat / {t}" for t in others) + " |")
        out.append("|---|" + "---|" * len(others))
        for name, _, _ in metrics:
            cells = []
            for t in others:
                base, leat = medians[(name, t)], medians[(name, "leat")]
                cells.append(f"{leat / base:.2f}×" if base and leat is not None else "–")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Per round, in the order run (load average 1/5/15 min before the broker started → after it stopped):")
    out.append("")
    many = len(runs) > 1
    out.append(("| run " if many else "") + "| round | target | produce events/s | p99 ms | consume events/s | load before | load after |")
    out.append(("|---" if many else "") + "|---|---|---|---|---|---|---|")
    for r in rows:
        load = lambda k: " ".join(f"{x:.2f}" for x in r.get(k, [])) or "?"
        out.append(
            (f"| {r['run']} " if many else "")
            + f"| {r['round']} | {r['target']} | {r['produce']['events_per_s']:,.0f} "
            f"| {r['produce']['latency_ms']['p99']:.1f} | {r['consume']['events_per_s']:,.0f} "
            f"| {load('load_before')} | {load('load_after')} |"
        )
    print("\n".join(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["create", "run", "table"])
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--raw", nargs="+", help="table: the run's raw.jsonl (several: pooled)")
    parser.add_argument("--machine", nargs="+", help="table: the run's machine.txt (or several)")
    parser.add_argument("--token")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds, per phase")
    args = parser.parse_args()
    if args.command == "table":
        table(args)
        return
    if not args.bootstrap:
        fail("--bootstrap is required")
    if args.command == "create":
        create(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
