"""A confluent-kafka consumer group through rebalances.

argv: ADDR TOKEN TOPIC GROUP ASSIGNOR PARTITIONS

The topic holds 40 events (keys k0..k39) when this starts. Member A joins
and consumes; member B joins (the partitions are split between them, never
owned by both); 40 more events are produced and consumed; A leaves (B takes
every partition); 20 more are consumed by B. Every event is committed
(synchronously) as it is consumed, and must be consumed exactly once.
Prints one JSON line: what each phase saw.
"""

import json
import os
import sys
import time
import traceback

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from common import confluent_config


def fail(message):
    # Exits at once: librdkafka's threads would keep the process alive.
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


addr, token, topic, group, assignor, partitions = sys.argv[1:7]
partitions = int(partitions)
everything = set(range(partitions))

seen = {}  # (partition, offset) -> member
duplicates = []
# Per member: the offsets consumed but not committed yet, by partition. A
# commit while the group completes a rebalance gets REBALANCE_IN_PROGRESS,
# or ILLEGAL_GENERATION when the new generation began before the client
# saw its JoinGroup answer (as from Kafka): retried at the next poll, and
# before a partition goes.
pending = {}
RETRIABLE = (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION)
consumers = {}


def member(name):
    return Consumer(
        confluent_config(
            addr,
            token,
            **{
                "group.id": group,
                "client.id": f"member-{name}",
                "partition.assignment.strategy": assignor,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 300,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 1000,
            },
        )
    )


def commit(name, only=None):
    """Commits `name`'s pending offsets (of partitions `only`, if given);
    whether all of them were committed."""
    mine = pending[name]
    parts = [p for p in mine if only is None or p in only]
    if not parts:
        return True
    tps = [TopicPartition(topic, p, mine[p]) for p in parts]
    try:
        done = consumers[name].commit(offsets=tps, asynchronous=False)
    except KafkaException as e:
        if e.args[0].code() in RETRIABLE:
            return False
        fail(f"{name}: commit failed: {e}")
    ok = True
    for tp in done:
        if tp.error is None:
            if mine.get(tp.partition) == tp.offset:
                del mine[tp.partition]
        elif tp.error.code() in RETRIABLE:
            ok = False
        else:
            fail(f"{name}: commit of partition {tp.partition} failed: {tp.error}")
    return ok


def revoked(name):
    def on_revoke(consumer, partitions):
        gone = {tp.partition for tp in partitions}
        deadline = time.time() + 10
        while not commit(name, gone):
            if time.time() > deadline:
                fail(f"{name}: could not commit {pending[name]} before losing {gone}")
            time.sleep(0.1)
        for p in gone:
            pending[name].pop(p, None)

    return on_revoke


def subscribe(name, consumer):
    consumers[name] = consumer
    pending[name] = {}
    consumer.subscribe([topic], on_revoke=revoked(name))


def owned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def poll(name, consumer):
    msg = consumer.poll(0.1)
    if msg is None:
        commit(name)
        return
    if msg.error():
        if msg.error().code() == -191:  # _PARTITION_EOF
            return
        fail(f"{name}: {msg.error()}")
    key = (msg.partition(), msg.offset())
    if key in seen:
        duplicates.append((name, key, seen[key]))
    seen[key] = name
    pending[name][msg.partition()] = msg.offset() + 1
    commit(name)


def run(members, until, what, limit=60):
    deadline = time.time() + limit
    while not until():
        if time.time() > deadline:
            fail(
                f"{what}: timed out; owned "
                + str({n: sorted(owned(c)) for n, c in members.items()})
                + f", consumed {len(seen)}"
            )
        for name, consumer in members.items():
            poll(name, consumer)
        # No partition is ever owned by two members at once.
        mine = [owned(c) for c in members.values()]
        for i in range(len(mine)):
            for j in range(i + 1, len(mine)):
                if mine[i] & mine[j]:
                    fail(f"{what}: partitions {sorted(mine[i] & mine[j])} owned twice")


def produce(start, count):
    p = Producer(confluent_config(addr, token))
    for i in range(start, start + count):
        p.produce(topic, key=f"k{i}", value=f"v{i}")
    if p.flush(30) != 0:
        fail("produce did not finish")


sys.excepthook = lambda kind, value, tb: fail("".join(traceback.format_exception(kind, value, tb)))

a = member("a")
subscribe("a", a)
run({"a": a}, lambda: owned(a) == everything and len(seen) >= 20, "A alone")
a_alone = sorted(owned(a))

b = member("b")
subscribe("b", b)
both = {"a": a, "b": b}
run(
    both,
    lambda: owned(a) and owned(b) and owned(a) | owned(b) == everything,
    "A and B split",
)
split = {"a": sorted(owned(a)), "b": sorted(owned(b))}
produce(40, 40)
run(both, lambda: len(seen) >= 80, "A and B consume")
by_b_while_shared = sum(1 for m in seen.values() if m == "b")

deadline = time.time() + 10
while not commit("a"):
    if time.time() > deadline:
        fail(f"a: could not commit {pending['a']}")
    poll("b", b)
a.close()  # LeaveGroup: B takes over at once.
run({"b": b}, lambda: owned(b) == everything, "B alone")
produce(80, 20)
run({"b": b}, lambda: len(seen) >= 100, "B consumes the rest")
b_alone = sorted(owned(b))
# A moment more: nothing is delivered twice.
end = time.time() + 1
while time.time() < end:
    poll("b", b)
deadline = time.time() + 10
while not commit("b"):
    if time.time() > deadline:
        fail(f"b: could not commit {pending['b']}")
    time.sleep(0.1)
b.close()

print(
    json.dumps(
        {
            "a_alone": a_alone,
            "split": split,
            "b_alone": b_alone,
            "consumed": len(seen),
            "by_b_while_shared": by_b_while_shared,
            "duplicates": [str(d) for d in duplicates],
        }
    )
)
