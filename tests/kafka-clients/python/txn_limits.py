"""Two limits of an open transaction (confluent-kafka):
- `timeout`: transaction.timeout.ms of 2 s; a transaction left open 4 s is
  aborted by the server, and committing it then fails;
- `size`: a transaction buffering more than the server's
  --kafka-max-transaction-kib gets delivery errors, and is aborted.
Prints what happened, one line per step.

Usage: txn_limits.py ADDR TOKEN TOPIC timeout|size
"""

import sys
import time

from confluent_kafka import KafkaException, Producer

from common import confluent_config, fail

addr, token, topic, which = sys.argv[1:5]

errors = []


def delivered(err, msg):
    if err is not None:
        errors.append(err)


if which == "timeout":
    p = Producer(
        confluent_config(
            addr, token, **{"transactional.id": "txn-timeout", "transaction.timeout.ms": 2000}
        )
    )
    p.init_transactions(10)
    p.begin_transaction()
    p.produce(topic, key="t", value="timed-out", on_delivery=delivered)
    p.flush(10)
    time.sleep(4)
    try:
        p.commit_transaction(10)
        fail("a transaction past its timeout committed")
    except KafkaException as e:
        print(f"commit failed: {e.args[0].name()}")
    # A new instance goes on.
    q = Producer(
        confluent_config(
            addr, token, **{"transactional.id": "txn-timeout", "transaction.timeout.ms": 2000}
        )
    )
    q.init_transactions(10)
    q.begin_transaction()
    q.produce(topic, key="t", value="after-timeout")
    q.commit_transaction(10)
    print("next instance committed")
elif which == "size":
    p = Producer(
        confluent_config(
            addr,
            token,
            **{"transactional.id": "txn-size", "transaction.timeout.ms": 10000, "linger.ms": 50},
        )
    )
    p.init_transactions(10)
    p.begin_transaction()
    for i in range(200):
        p.produce(topic, key=f"s{i}", value="x" * 1024, on_delivery=delivered)
    p.flush(10)
    print(f"delivery errors: {len(errors)} {errors[0].name() if errors else ''}")
    try:
        p.commit_transaction(10)
        fail("an oversized transaction committed")
    except KafkaException as e:
        print(f"commit failed: {e.args[0].name()} abortable={e.args[0].txn_requires_abort()}")
        p.abort_transaction(10)
        print("aborted")
    # Within the bound, the same producer commits: librdkafka may first
    # fail one more transaction as abortable (the refused batch left a gap
    # in its sequences, and it bumps its epoch), as with any broker.
    for attempt in range(3):
        p.begin_transaction()
        for i in range(10):
            p.produce(topic, key=f"s{i}", value="small")
        try:
            p.commit_transaction(10)
            print("small committed")
            break
        except KafkaException as e:
            if not e.args[0].txn_requires_abort():
                raise
            p.abort_transaction(10)
else:
    fail(f"unknown step {which}")
