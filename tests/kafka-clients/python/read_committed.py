"""Reads every event of TOPIC with isolation.level=read_committed until
nothing arrives for a while; prints `key value` per event.

Usage: read_committed.py ADDR TOKEN TOPIC
"""

import sys

from confluent_kafka import Consumer

from common import confluent_config, read_from_start

addr, token, topic = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = Consumer(
    confluent_config(
        addr,
        token,
        **{"group.id": "reader", "isolation.level": "read_committed", "enable.auto.commit": False},
    )
)
for msg in read_from_start(consumer, topic, idle_polls=10):
    print((msg.key() or b"").decode(), msg.value().decode())
consumer.close()
