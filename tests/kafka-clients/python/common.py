"""What the client scripts share: the listener's address and credentials.

Every script takes the Kafka address (HOST:PORT) and the token as its first
two arguments, prints what the Rust test asserts on standard output, and
exits non-zero with the reason on standard error when something fails.
"""

import sys


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def confluent_config(addr, token, **more):
    """confluent-kafka (librdkafka) settings for Leat's listener."""
    config = {
        "bootstrap.servers": addr,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "test",
        "sasl.password": token,
        # Kafka's partitioner, the one Leat uses (librdkafka's default is
        # CRC32-based).
        "partitioner": "murmur2_random",
    }
    config.update(more)
    return config


def kafka_python_config(addr, token, **more):
    """kafka-python settings for Leat's listener."""
    config = {
        "bootstrap_servers": addr,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "test",
        "sasl_plain_password": token,
    }
    config.update(more)
    return config


def read_from_start(consumer, topic, idle_polls, limit=None):
    """Assigns every partition of `topic` to `consumer` from offset 0 and
    yields its messages, until `idle_polls` polls of 0.2 s in a row return
    nothing, or `limit` messages were read. A consume error fails the script."""
    from confluent_kafka import TopicPartition

    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    idle = 0
    read = 0
    while idle < idle_polls and (limit is None or read < limit):
        msg = consumer.poll(0.2)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            fail(f"consume: {msg.error()}")
        idle = 0
        read += 1
        yield msg


def registry_client(http_addr, token):
    """confluent-kafka's Schema Registry client of the Leat server at
    http_addr, with its token as a static bearer token."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(
        {
            "url": f"http://{http_addr}",
            "bearer.auth.credentials.source": "STATIC_TOKEN",
            "bearer.auth.token": token,
            # Confluent Cloud's headers, which the client requires with a
            # static token; Leat ignores them.
            "bearer.auth.logical.cluster": "lsrc-leat",
            "bearer.auth.identity.pool.id": "pool-leat",
        }
    )
