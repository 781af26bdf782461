"""A transactional confluent-kafka producer commits one transaction and
aborts another; a second producer with the same transactional.id fences
the first. Then a read_committed consumer reads TOPIC from the start.
Prints `committed`, `aborted`, `fenced: ...`, then `value` per event read.

Usage: txn_commit_abort.py ADDR TOKEN TOPIC
"""

import sys

from confluent_kafka import Consumer, KafkaException, Producer

from common import confluent_config, fail, read_from_start

addr, token, topic = sys.argv[1], sys.argv[2], sys.argv[3]


def producer():
    return Producer(
        confluent_config(
            addr, token, **{"transactional.id": "txn-basic", "transaction.timeout.ms": 10000}
        )
    )


p1 = producer()
p1.init_transactions(10)
p1.begin_transaction()
for i in range(5):
    p1.produce(topic, key=f"k{i}", value=f"committed-{i}")
p1.commit_transaction(10)
print("committed")

p1.begin_transaction()
for i in range(5):
    p1.produce(topic, key=f"k{i}", value=f"aborted-{i}")
p1.flush(10)
p1.abort_transaction(10)
print("aborted")

# A second instance with the same transactional.id fences the first.
p1.begin_transaction()
p1.produce(topic, key="z", value="zombie")
p1.flush(10)
p2 = producer()
p2.init_transactions(10)
try:
    p1.commit_transaction(10)
    fail("the fenced producer committed")
except KafkaException as e:
    print(f"fenced: {e.args[0].code()} fatal={e.args[0].fatal()}")
p2.begin_transaction()
p2.produce(topic, key="k", value="second")
p2.commit_transaction(10)

consumer = Consumer(
    confluent_config(
        addr,
        token,
        **{"group.id": "txn-check", "isolation.level": "read_committed", "enable.auto.commit": False},
    )
)
for msg in read_from_start(consumer, topic, idle_polls=15):
    print(msg.value().decode())
consumer.close()
