"""A confluent-kafka consumer that tries a group it may not use.

argv: ADDR TOKEN TOPIC GROUP

Subscribes as a member of GROUP and prints the error the join gets; then,
as a simple consumer of GROUP (no membership), commits an offset and prints
the error the commit gets. One error name a line.
"""

import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from common import confluent_config


def fail(message):
    # Exits at once: librdkafka's threads would keep the process alive.
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


addr, token, topic, group = sys.argv[1:5]
settings = {
    "group.id": group,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
}

member = Consumer(confluent_config(addr, token, **settings))
member.subscribe([topic])
deadline = time.time() + 30
while True:
    if time.time() > deadline:
        fail("the member got no error")
    msg = member.poll(0.2)
    if msg is None:
        continue
    if msg.error():
        print(msg.error().name())
        break
    fail(f"the member consumed offset {msg.offset()} of partition {msg.partition()}")
member.close()

simple = Consumer(confluent_config(addr, token, **settings))
try:
    done = simple.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    errors = [tp.error.name() for tp in done if tp.error]
    print(errors[0] if errors else "NO_ERROR")
except KafkaException as e:
    print(e.args[0].name())
simple.close()
