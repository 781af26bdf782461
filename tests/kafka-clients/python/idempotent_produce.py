"""An idempotent confluent-kafka producer (enable.idempotence=true) sends
N keyed events to TOPIC; then a consumer reads every partition from the
start. Prints `partition offset value` per event read.

Usage: idempotent_produce.py ADDR TOKEN TOPIC N
"""

import sys

from confluent_kafka import Consumer, Producer

from common import confluent_config, fail, read_from_start

addr, token, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

errors = []


def delivered(err, msg):
    if err is not None:
        errors.append(str(err))


producer = Producer(
    confluent_config(
        addr,
        token,
        **{"enable.idempotence": True, "linger.ms": 5, "batch.num.messages": 50},
    )
)
for i in range(n):
    producer.produce(topic, key=f"k{i % 7}", value=f"v{i}", on_delivery=delivered)
    producer.poll(0)
if producer.flush(30) != 0:
    fail("the producer did not flush")
if errors:
    fail(f"delivery errors: {errors[:5]}")

consumer = Consumer(
    confluent_config(addr, token, **{"group.id": "idem-check", "enable.auto.commit": False})
)
for msg in read_from_start(consumer, topic, idle_polls=50, limit=n):
    print(msg.partition(), msg.offset(), msg.value().decode())
consumer.close()
