"""A group consumer of kafka-python or aiokafka: consumes COUNT events from
the group's committed position, commits, and closes.

argv: ADDR TOKEN CLIENT TOPIC GROUP COUNT, CLIENT kafka-python or aiokafka.
Prints the values it consumed, one a line, in (partition, offset) order.
"""

import sys
import time

from common import fail, kafka_python_config

addr, token, client, topic, group, count = sys.argv[1:7]
count = int(count)

settings = dict(
    group_id=group,
    client_id=f"{client}-resume",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    session_timeout_ms=6000,
    heartbeat_interval_ms=500,
)

if client == "kafka-python":
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**kafka_python_config(addr, token, **settings))
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < count:
        if time.time() > deadline:
            fail(f"consumed {len(got)} of {count}")
        # Not 200 ms: kafka-python 3.0.12 can drop the assignment of a
        # SyncGroup answered after a poll timed out within its rejoin
        # (seen on a loaded machine: "consumed 0", the answer carried the
        # partitions); a second is longer than that round trip here.
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend(records)
    consumer.commit()
    consumer.close()
elif client == "aiokafka":
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def main():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=addr,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="test",
            sasl_plain_password=token,
            **settings,
        )
        await consumer.start()
        consumer.subscribe([topic])
        got = []
        try:
            deadline = time.time() + 60
            while len(got) < count:
                if time.time() > deadline:
                    fail(f"consumed {len(got)} of {count}")
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    got.extend(records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(main())
else:
    fail(f"unknown client {client}")

if len(got) != count:
    fail(f"consumed {len(got)} events, expected {count}")
for record in sorted(got, key=lambda r: (r.partition, r.offset)):
    print(record.value.decode())
