"""Two kafka-python members of one group (roundrobin): they split the
partitions, never owning one twice; when one closes (LeaveGroup), the other
takes every partition.

argv: ADDR TOKEN TOPIC GROUP PARTITIONS
Prints one JSON line: the split, and what the survivor owned at the end.
"""

import json
import os
import sys
import time

from kafka import KafkaConsumer
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from common import kafka_python_config


def fail(message):
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


def member(addr, token, group, name):
    consumer = KafkaConsumer(
        **kafka_python_config(
            addr,
            token,
            group_id=group,
            client_id=f"member-{name}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            partition_assignment_strategy=[RoundRobinPartitionAssignor],
        )
    )
    return consumer


def owned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def run(members, until, what):
    deadline = time.time() + 60
    while not until():
        if time.time() > deadline:
            states = [
                (c._coordinator.state, c._coordinator._generation, c._coordinator.need_rejoin())
                for c in members
            ]
            fail(f"{what}: timed out; owned {[sorted(owned(c)) for c in members]}; {states}")
        for c in members:
            c.poll(timeout_ms=500)
        mine = [owned(c) for c in members]
        if len(mine) == 2 and mine[0] & mine[1]:
            fail(f"{what}: partitions {sorted(mine[0] & mine[1])} owned twice")


def main():
    addr, token, topic, group, partitions = sys.argv[1:6]
    everything = set(range(int(partitions)))
    a = member(addr, token, group, "a")
    a.subscribe([topic])
    run([a], lambda: owned(a) == everything, "A alone")
    b = member(addr, token, group, "b")
    b.subscribe([topic])
    run(
        [a, b],
        lambda: owned(a) and owned(b) and owned(a) | owned(b) == everything,
        "A and B split",
    )
    split = {"a": sorted(owned(a)), "b": sorted(owned(b))}
    a.close()
    run([b], lambda: owned(b) == everything, "B alone")
    survivor = sorted(owned(b))
    b.close()
    print(json.dumps({"split": split, "survivor": survivor}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure fails the test
        fail(repr(e))
