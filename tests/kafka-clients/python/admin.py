"""Kafka's admin APIs through confluent-kafka's AdminClient and kafka-python's
KafkaAdminClient: create topics (with configs), grow one, describe its
configs, delete topics; refusals come back as errors.

argv: ADDR TOKEN. Prints `ok` when every check passed.
"""

import sys

from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic
from confluent_kafka import KafkaException
from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic
from kafka.errors import TopicAlreadyExistsError

from common import confluent_config, fail, kafka_python_config

addr, token = sys.argv[1], sys.argv[2]
admin = AdminClient(confluent_config(addr, token))


def wait(futures):
    """{name: result or exception}"""
    out = {}
    for name, f in futures.items():
        try:
            out[name] = f.result(timeout=30)
        except KafkaException as e:
            out[name] = e.args[0]
    return out


created = wait(
    admin.create_topics(
        [
            NewTopic("admin-a", num_partitions=3, replication_factor=1),
            NewTopic(
                "admin-compacted",
                num_partitions=2,
                config={"cleanup.policy": "compact", "segment.bytes": "1048576"},
            ),
            NewTopic("admin-bad-config", num_partitions=1, config={"cleanup.policy": "compact,delete"}),
            NewTopic("admin-bad-rf", num_partitions=1, replication_factor=3),
        ]
    )
)
if created["admin-a"] is not None or created["admin-compacted"] is not None:
    fail(f"create failed: {created}")
if "compact,delete" not in str(created["admin-bad-config"]):
    fail(f"a compact,delete policy should be refused with its reason: {created['admin-bad-config']}")
if created["admin-bad-rf"] is None or "replication" not in str(created["admin-bad-rf"]).lower():
    fail(f"replication factor 3 should be refused: {created['admin-bad-rf']}")

again = wait(admin.create_topics([NewTopic("admin-a", num_partitions=1)]))
if "already exists" not in str(again["admin-a"]):
    fail(f"creating admin-a twice: {again}")

metadata = admin.list_topics(timeout=30)
if len(metadata.topics["admin-a"].partitions) != 3:
    fail(f"admin-a has {len(metadata.topics['admin-a'].partitions)} partitions, not 3")
if "admin-bad-config" in metadata.topics:
    fail("a refused topic was created")

grown = wait(admin.create_partitions([NewPartitions("admin-a", 5)]))
if grown["admin-a"] is not None:
    fail(f"growing admin-a: {grown}")
shrunk = wait(admin.create_partitions([NewPartitions("admin-a", 2)]))
if shrunk["admin-a"] is None:
    fail("lowering a partition count should be refused")
metadata = admin.list_topics(timeout=30)
if len(metadata.topics["admin-a"].partitions) != 5:
    fail("admin-a did not grow to 5 partitions")

described = wait(admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "admin-compacted")]))
(configs,) = described.values()
if configs["cleanup.policy"].value != "compact":
    fail(f"admin-compacted's cleanup.policy: {configs['cleanup.policy'].value}")
print("cleanup.policy", configs["cleanup.policy"].value)

deleted = wait(admin.delete_topics(["admin-compacted", "admin-missing"]))
if deleted["admin-compacted"] is not None:
    fail(f"delete admin-compacted: {deleted}")
if deleted["admin-missing"] is None:
    fail("deleting a missing topic should fail")

# kafka-python's admin client, the same calls.
kp = KafkaAdminClient(**kafka_python_config(addr, token))
kp.create_topics([KpNewTopic("admin-kp", num_partitions=2, replication_factor=1)])
try:
    kp.create_topics([KpNewTopic("admin-kp", num_partitions=2, replication_factor=1)])
    fail("kafka-python: creating admin-kp twice should fail")
except TopicAlreadyExistsError:
    pass
if "admin-kp" not in kp.list_topics():
    fail("kafka-python: admin-kp missing from list_topics")
kp.delete_topics(["admin-kp"])
kp.close()
print("ok")
