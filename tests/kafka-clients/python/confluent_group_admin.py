"""confluent-kafka's AdminClient lists and describes a group with a member.

argv: ADDR TOKEN TOPIC GROUP

Prints one JSON line: the listed groups with their states, and the
described group's state, protocol type, assignor and members.
"""

import json
import os
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from common import confluent_config


def fail(message):
    # Exits at once: librdkafka's threads would keep the process alive.
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


def main():
    addr, token, topic, group = sys.argv[1:5]
    consumer = Consumer(
        confluent_config(
            addr,
            token,
            **{
                "group.id": group,
                "client.id": "admin-test-member",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 300,
                "partition.assignment.strategy": "roundrobin",
            },
        )
    )
    consumer.subscribe([topic])
    deadline = time.time() + 30
    while not consumer.assignment():
        if time.time() > deadline:
            fail("no assignment")
        consumer.poll(0.1)
    config = confluent_config(addr, token)
    del config["partitioner"]
    admin = AdminClient(config)
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=20)
    groups = {g.group_id: str(g.state) for g in listed.valid}
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(
        timeout=20
    )
    members = [
        {
            "client_id": m.client_id,
            "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions),
        }
        for m in described.members
    ]
    consumer.close()
    print(
        json.dumps(
            {
                "listed": groups,
                "state": str(described.state),
                "assignor": described.partition_assignor,
                "members": members,
            }
        ),
        flush=True,
    )
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure fails the test
        fail(repr(e))
