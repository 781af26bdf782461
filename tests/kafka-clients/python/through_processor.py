"""A Leat processor between Kafka clients: confluent-kafka produces keyed
events to IN, a deployed processor writes OUT, and a confluent-kafka consumer
reads OUT with the outputs' provenance headers.

argv: ADDR TOKEN IN OUT N. Prints one line per output read:
`key<TAB>value<TAB>leat.source<TAB>leat.processor`, sorted by key.
"""

import sys

from confluent_kafka import Consumer, Producer

from common import confluent_config, fail

addr, token, topic_in, topic_out, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

producer = Producer(confluent_config(addr, token, **{"enable.idempotence": True, "linger.ms": 5}))
failures = []
for i in range(n):
    producer.produce(
        topic_in,
        key=f"key-{i:04}",
        value=f"event {i}",
        on_delivery=lambda err, msg: failures.append(err) if err else None,
    )
producer.flush(30)
if failures:
    fail(f"delivery failed: {failures[:3]}")

consumer = Consumer(
    confluent_config(
        addr,
        token,
        **{"group.id": "through-readers", "auto.offset.reset": "earliest", "enable.auto.commit": False},
    )
)
consumer.subscribe([topic_out])
got = {}
import time

deadline = time.time() + 60
while len(got) < n and time.time() < deadline:
    msg = consumer.poll(0.5)
    if msg is None:
        continue
    if msg.error():
        fail(f"consume: {msg.error()}")
    headers = dict(msg.headers() or [])
    got[msg.key().decode()] = (
        msg.value().decode(),
        headers.get("leat.source", b"").decode(),
        headers.get("leat.processor", b"").decode(),
    )
consumer.commit(asynchronous=False)
consumer.close()
if len(got) < n:
    fail(f"read {len(got)} of {n} outputs in 60 s")
for key in sorted(got):
    print("\t".join((key,) + got[key]))
