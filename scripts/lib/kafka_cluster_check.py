"""The Kafka side of scripts/kafka-cluster-check.sh (confluent-kafka, from
scripts/setup-kafka-clients.sh's virtualenv): writes the inputs, reports the
progress, checks the outputs with a read_committed consumer.

  describe --bootstrap B --topics T...       each topic's replicas (must be 3) and leaders
  produce  --bootstrap B --topic T --count N --kind events|words
  progress --bootstrap B --group G --topic T [--stable]
                                              the group's committed offsets, summed
  verify   --bootstrap B --output T --count N
  verify-words --bootstrap B --output T --changelog T --count N

The events: key `k<i>`, value `event-<i>`; uppercase's output of each is
`EVENT-<i>` with key `k<i>`. The words: key and value `WORDS[i * 7 % 12]`,
as tests/tests/e2e/on_kafka.rs writes them; word-count emits, for each word
seen k times, the counts 1..k, each once. `verify` and `verify-words` exit
with status 1 and say what is wrong on any loss or duplicate.
"""

import argparse
import collections
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "hazel", "iris",
         "juniper", "kiwi", "lemon"]


def word(i):
    return WORDS[i * 7 % len(WORDS)]


def describe(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    metadata = admin.list_topics(timeout=30)
    leaders = collections.Counter()
    bad = []
    for name in args.topics:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            bad.append(f"{name}: missing ({topic.error if topic else 'not listed'})")
            continue
        for p in topic.partitions.values():
            leaders[p.leader] += 1
            if len(p.replicas) != args.replicas:
                bad.append(f"{name}/{p.id}: {len(p.replicas)} replicas")
    print("partitions led by each node (node id: count):",
          dict(sorted(leaders.items())), file=sys.stderr)
    if bad:
        print(f"not {args.replicas} replicas: {bad}", file=sys.stderr)
        sys.exit(1)


def produce(args):
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 20,
    })
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    for i in range(args.count):
        if args.kind == "events":
            key, value = f"k{i}", f"event-{i}"
        else:
            key = value = word(i)
        while True:
            try:
                producer.produce(args.topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(120)
    if failed or left:
        sys.exit(f"producing to {args.topic}: {len(failed)} failed (e.g. {failed[:1]}), "
                 f"{left} not delivered")


def consumer(bootstrap, group, isolation):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })


def partitions(c, topic):
    return sorted(c.list_topics(topic, timeout=30).topics[topic].partitions)


def progress(args):
    # read_committed asks for stable offsets (KIP-447): it waits while a
    # transaction holding offsets is open, and fails after the timeout.
    c = consumer(args.bootstrap, args.group,
                 "read_committed" if args.stable else "read_uncommitted")
    try:
        tps = [TopicPartition(args.topic, p) for p in partitions(c, args.topic)]
        committed = c.committed(tps, timeout=10)
        print(sum(max(tp.offset, 0) for tp in committed))
    except KafkaException as e:
        print(f"progress of {args.group}: {e}", file=sys.stderr)
        print(-1)
    finally:
        c.close()


def read_committed(bootstrap, topic):
    """Every committed record of `topic`: (key, value, partition), read from
    its start to its end with isolation.level=read_committed."""
    c = consumer(bootstrap, f"check-{uuid.uuid4()}", "read_committed")
    ps = partitions(c, topic)
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in ps}
    c.assign([TopicPartition(topic, p, 0) for p in ps])
    records = []
    deadline = time.monotonic() + 600
    while True:
        positions = {tp.partition: tp.offset for tp in c.position(
            [TopicPartition(topic, p) for p in ps])}
        if all(ends[p] == 0 or positions[p] >= ends[p] for p in ps):
            break
        if time.monotonic() > deadline:
            sys.exit(f"reading {topic}: not at its end {ends} after 600 s (at {positions})")
        for m in c.consume(10_000, timeout=0.5):
            if m.error():
                raise KafkaException(m.error())
            records.append((m.key().decode() if m.key() is not None else None,
                            m.value().decode() if m.value() is not None else None,
                            m.partition()))
    c.close()
    return records


def verify(args):
    records = read_committed(args.bootstrap, args.output)
    by_value = collections.Counter(v for _, v, _ in records)
    expected = {f"EVENT-{i}" for i in range(args.count)}
    duplicates = [(v, k) for v, k in by_value.items() if k > 1]
    missing = expected - by_value.keys()
    unexpected = by_value.keys() - expected
    wrong_keys = [(k, v) for k, v, _ in records
                  if v in expected and k != "k" + v[len("EVENT-"):]]
    ok = not (duplicates or missing or unexpected or wrong_keys) and len(records) == args.count
    print(f"{args.output}: {len(records)} committed output(s) for {args.count} input(s): "
          f"{len(duplicates)} duplicated, {len(missing)} missing, {len(unexpected)} unexpected, "
          f"{len(wrong_keys)} with a wrong key"
          + ("" if ok else f"; e.g. duplicated {sorted(duplicates)[:5]}, missing "
             f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, keys {wrong_keys[:5]}"),
          file=sys.stderr)
    if not ok:
        sys.exit(1)


def verify_words(args):
    totals = collections.Counter(word(i) for i in range(args.count))
    counts = collections.defaultdict(list)
    for key, value, _ in read_committed(args.bootstrap, args.output):
        counts[key].append(int(value))
    bad = []
    for w in sorted(set(totals) | set(counts)):
        got = sorted(counts.get(w, []))
        if got != list(range(1, totals[w] + 1)):
            bad.append(f"{w}: produced {totals[w]} times, {len(got)} count(s) emitted, "
                       f"{len(set(got))} distinct, last {got[-1:]}")
    # The state: each word's last count in the changelog is its total.
    table = {}
    for key, value, _ in read_committed(args.bootstrap, args.changelog):
        if value is None:
            table.pop(key, None)
        else:
            table[key] = int(value)
    if table != dict(totals):
        bad.append(f"the changelog's counts {dict(sorted(table.items()))} are not the totals "
                   f"{dict(sorted(totals.items()))}")
    emitted = sum(len(v) for v in counts.values())
    print(f"{args.output}: {emitted} committed count(s) for {args.count} word(s)"
          + (f": {bad}" if bad else ", each 1..k once; the changelog holds every total"),
          file=sys.stderr)
    if bad:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("describe")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--topics", nargs="+", required=True)
    p.set_defaults(run=describe)
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--kind", choices=["events", "words"], required=True)
    p.set_defaults(run=produce)
    p = sub.add_parser("progress")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--stable", action="store_true")
    p.set_defaults(run=progress)
    p = sub.add_parser("verify")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--count", type=int, required=True)
    p.set_defaults(run=verify)
    p = sub.add_parser("verify-words")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--changelog", required=True)
    p.add_argument("--count", type=int, required=True)
    p.set_defaults(run=verify_words)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
