"""Reads every event of TOPIC with isolation.level=read_committed until
nothing arrives for a while; prints `key value` per event.

Usage: read_committed.py ADDR TOKEN TOPIC
"""

import sys

from confluent_kafka import Consumer, TopicPartition

from common import confluent_config, fail

addr, token, topic = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = Consumer(
    confluent_config(
        addr,
        token,
        **{"group.id": "reader", "isolation.level": "read_committed", "enable.auto.commit": False},
    )
)
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
idle = 0
while idle < 10:
    msg = consumer.poll(0.2)
    if msg is None:
        idle += 1
        continue
    if msg.error():
        fail(f"consume: {msg.error()}")
    idle = 0
    print((msg.key() or b"").decode(), msg.value().decode())
consumer.close()
