"""Transactions with kafka-python or aiokafka: one transaction commits
records and the offset GROUP reached on IN/0 (send_offsets_to_transaction),
one is aborted. Prints `ok` once both are done.

Usage: txn_clients.py ADDR TOKEN OUT IN GROUP kafka-python|aiokafka
"""

import asyncio
import sys

from common import fail, kafka_python_config

addr, token, out, src, group, client = sys.argv[1:7]
config = kafka_python_config(addr, token)


def kafka_python():
    from kafka import KafkaProducer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    producer = KafkaProducer(transactional_id=f"kp-{group}", **config)
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(3):
        producer.send(out, key=b"kp", value=f"kp-committed-{i}".encode(), partition=0)
    producer.send_offsets_to_transaction(
        {TopicPartition(src, 0): OffsetAndMetadata(7, "", -1)}, group
    )
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send(out, key=b"kp", value=b"kp-aborted", partition=0)
    producer.flush()
    producer.abort_transaction()
    producer.close()


async def aiokafka():
    from aiokafka import AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(
        transactional_id=f"aio-{group}",
        bootstrap_servers=addr,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="test",
        sasl_plain_password=token,
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send_and_wait(
                    out, key=b"aio", value=f"aio-committed-{i}".encode(), partition=0
                )
            await producer.send_offsets_to_transaction({TopicPartition(src, 0): 7}, group)
        await producer.begin_transaction()
        await producer.send_and_wait(out, key=b"aio", value=b"aio-aborted", partition=0)
        await producer.abort_transaction()
    finally:
        await producer.stop()


if client == "kafka-python":
    kafka_python()
elif client == "aiokafka":
    asyncio.run(aiokafka())
else:
    fail(f"unknown client {client}")
print("ok")
