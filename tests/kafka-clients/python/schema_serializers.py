"""confluent-kafka's Schema Registry client and serializers against Leat:
the registry at the server's HTTP root (bearer token), the events through
its Kafka listener.

1. AvroSerializer (auto-registration) + Producer on AVRO_TOPIC, then
   Consumer + AvroDeserializer read the same dicts back;
2. the same with JSONSerializer / JSONDeserializer on JSON_TOPIC;
3. registering an incompatible Avro schema raises SchemaRegistryError (409);
4. a plain Producer's bytes that do not match JSON_TOPIC's schema are
   refused (the delivery report's error).

Prints, one per line:
  registered SUBJECT ID VERSION     (what the serializer registered)
  avro N / json N                   (dicts read back equal to those sent)
  incompatible HTTP_STATUS ERROR_CODE MESSAGE
  refused ERROR_NAME ERROR_CODE MESSAGE
  ok

Usage: schema_serializers.py ADDR TOKEN HTTP_ADDR AVRO_TOPIC JSON_TOPIC
"""

import json
import sys

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from common import confluent_config, fail, read_from_start, registry_client

addr, token, http_addr, avro_topic, json_topic = sys.argv[1:6]

registry = registry_client(http_addr, token)

AVRO_ORDER = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "leat.test",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "qty", "type": "int"},
            {"name": "price", "type": "double"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "note", "type": ["null", "string"], "default": None},
            {
                "name": "status",
                "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]},
            },
        ],
    }
)

JSON_ORDER = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Order",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "qty": {"type": "integer", "minimum": 1},
            "lines": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["id", "qty"],
    }
)

avro_orders = [
    {
        "id": f"a-{i}",
        "qty": i + 1,
        "price": 9.5 * i,
        "tags": [f"t{j}" for j in range(i)],
        "note": None if i % 2 else f"note {i}",
        "status": ["NEW", "PAID", "SHIPPED"][i % 3],
    }
    for i in range(6)
]
json_orders = [{"id": f"j-{i}", "qty": i + 1, "lines": ["x"] * i} for i in range(6)]


def produce_and_read(topic, serializer, deserializer, values):
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))

    producer = Producer(confluent_config(addr, token))
    for i, value in enumerate(values):
        ctx = SerializationContext(topic, MessageField.VALUE)
        producer.produce(topic, key=f"k{i}", value=serializer(value, ctx), on_delivery=delivered)
        producer.poll(0)
    if producer.flush(30) != 0:
        fail(f"{topic}: the producer did not flush")
    if errors:
        fail(f"{topic}: delivery errors: {errors}")
    consumer = Consumer(
        confluent_config(addr, token, **{"group.id": f"{topic}-check", "enable.auto.commit": False})
    )
    got = []
    for msg in read_from_start(consumer, topic, idle_polls=25, limit=len(values)):
        raw = msg.value()
        if raw[0] != 0:
            fail(f"{topic}: not Confluent's wire format: {raw!r}")
        got.append(deserializer(raw, SerializationContext(topic, MessageField.VALUE)))
    consumer.close()
    if got != values:
        fail(f"{topic}: read back\n{got}\ninstead of\n{values}")
    return len(got)


avro_ser = AvroSerializer(schema_registry_client=registry, schema_str=AVRO_ORDER)
avro_de = AvroDeserializer(schema_registry_client=registry)
n = produce_and_read(avro_topic, avro_ser, avro_de, avro_orders)
latest = registry.get_latest_version(f"{avro_topic}-value")
print("registered", f"{avro_topic}-value", latest.schema_id, latest.version)
print("avro", n)

json_ser = JSONSerializer(schema_str=JSON_ORDER, schema_registry_client=registry)
json_de = JSONDeserializer(schema_str=None, schema_registry_client=registry)
n = produce_and_read(json_topic, json_ser, json_de, json_orders)
latest = registry.get_latest_version(f"{json_topic}-value")
print("registered", f"{json_topic}-value", latest.schema_id, latest.version)
print("json", n)

# A reader that cannot read the registered events: a new field without a
# default (BACKWARD, the default mode).
incompatible = json.loads(AVRO_ORDER)
incompatible["fields"].append({"name": "customer", "type": "string"})
try:
    registry.register_schema(f"{avro_topic}-value", Schema(json.dumps(incompatible), "AVRO"))
    fail("the incompatible Avro schema was registered")
except SchemaRegistryError as e:
    print("incompatible", e.http_status_code, e.error_code, e.error_message.replace("\n", " "))

# Plain bytes, no serializer: `qty` is a string, the schema says integer.
refused = []


def delivered_raw(err, msg):
    if err is None:
        fail(f"an invalid event was accepted at offset {msg.offset()}")
    refused.append(err)


producer = Producer(confluent_config(addr, token, **{"retries": 0}))
producer.produce(json_topic, key="raw", value=b'{"id": "raw", "qty": "three"}', on_delivery=delivered_raw)
if producer.flush(30) != 0:
    fail("the raw producer did not flush")
if len(refused) != 1:
    fail(f"expected one refused delivery, got {refused}")
err = refused[0]
print("refused", err.name(), err.code(), err.str().replace("\n", " "))
if err.code() != KafkaError.INVALID_RECORD:
    fail(f"expected INVALID_RECORD ({KafkaError.INVALID_RECORD}), got {err.code()}")
print("ok")
