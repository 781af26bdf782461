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
