"""A transactional consume-transform-produce loop (confluent-kafka): reads
IN from the given start offsets (one per partition), writes `out-VALUE`
to OUT for each input, and commits its consumed positions for GROUP with
send_offsets_to_transaction, PER_TXN inputs per transaction, until TOTAL
inputs were consumed in all. With KILL_AFTER > 0 it kills itself (SIGKILL)
in the middle of transaction number KILL_AFTER + 1, its records sent.

The consumer uses assign() (no group membership): its group metadata has
generation -1 and no member id, which a transactional offset commit
accepts for a group without members.

Usage: txn_loop.py ADDR TOKEN IN OUT GROUP START_OFFSETS TOTAL PER_TXN KILL_AFTER
"""

import os
import signal
import sys

from confluent_kafka import Consumer, Producer, TopicPartition

from common import confluent_config, fail

addr, token, src, dst, group = sys.argv[1:6]
starts = [int(o) for o in sys.argv[6].split(",")]
total, per_txn, kill_after = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])

consumer = Consumer(
    confluent_config(
        addr,
        token,
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
    )
)
consumer.assign([TopicPartition(src, p, o) for p, o in enumerate(starts)])
producer = Producer(
    confluent_config(
        addr,
        token,
        **{"transactional.id": f"loop-{group}", "transaction.timeout.ms": 20000},
    )
)
producer.init_transactions(15)

done = sum(starts)
txns = 0
idle = 0
while done < total:
    batch = []
    while len(batch) < per_txn and done + len(batch) < total and idle < 100:
        msg = consumer.poll(0.2)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            fail(f"consume: {msg.error()}")
        idle = 0
        batch.append(msg)
    if not batch:
        fail(f"no input after {done} of {total}")
    producer.begin_transaction()
    for msg in batch:
        producer.produce(dst, key=msg.key(), value=b"out-" + msg.value())
    if kill_after and txns == kill_after:
        producer.flush(10)
        print(f"killing myself in transaction {txns + 1}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    positions = consumer.position(consumer.assignment())
    producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 10)
    producer.commit_transaction(10)
    txns += 1
    done += len(batch)
print(f"done: {done} inputs in {txns} transactions")
consumer.close()
