"""JSON Schema versions through confluent-kafka's SchemaRegistryClient
against Leat's registry: the compatibility modes BACKWARD, FORWARD and FULL,
and malformed schemas.

Prints one line per step, `STEP WHAT...`, that the Rust test asserts:
  backward-required STATUS CODE MESSAGE   (adding a required property: refused)
  backward-optional VERSION               (adding an optional property to a closed object)
  forward-check BOOL                      (test_compatibility of the required property under FORWARD)
  forward-required VERSION                (... then registered)
  forward-unrequire STATUS CODE MESSAGE   (dropping a requirement: refused)
  full-check BOOL                         (widening `id` to string-or-null under FULL)
  full-widen STATUS CODE MESSAGE          (... refused on registration)
  full-description VERSION                (an annotation: accepted)
  malformed-json STATUS CODE MESSAGE
  malformed-schema STATUS CODE MESSAGE
  versions SUBJECT V,V,...
  mode SUBJECT MODE
  ok

Usage: schema_json_registry.py HTTP_ADDR TOKEN
"""

import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryError

from common import fail, registry_client

http_addr, token = sys.argv[1], sys.argv[2]

registry = registry_client(http_addr, token)


def js(schema):
    return Schema(json.dumps(schema), "JSON")


def obj(props, required, closed):
    schema = {"type": "object", "properties": props, "required": required}
    if closed:
        schema["additionalProperties"] = False
    return schema


def registered(subject, schema):
    registry.register_schema(subject, schema)
    return registry.lookup_schema(subject, schema).version


def refused(step, subject, schema):
    try:
        registry.register_schema(subject, schema)
    except SchemaRegistryError as e:
        print(step, e.http_status_code, e.error_code, e.error_message.replace("\n", " "))
        return
    fail(f"{step}: {subject} accepted {schema.schema_str}")


# A closed object, under BACKWARD (the default mode).
closed = "jsr-closed-value"
registry.register_schema(closed, js(obj({"id": {"type": "string"}}, ["id"], True)))
refused(
    "backward-required",
    closed,
    js(obj({"id": {"type": "string"}, "email": {"type": "string"}}, ["id", "email"], True)),
)
print(
    "backward-optional",
    registered(
        closed, js(obj({"id": {"type": "string"}, "note": {"type": "string"}}, ["id"], True))
    ),
)

# An open object, under FORWARD: the old version reads what the new writes.
open_ = "jsr-open-value"
registry.register_schema(open_, js(obj({"id": {"type": "string"}}, ["id"], False)))
registry.set_compatibility(open_, "FORWARD")
with_email = js(obj({"id": {"type": "string"}, "email": {"type": "string"}}, ["id", "email"], False))
print("forward-check", registry.test_compatibility(open_, with_email))
print("forward-required", registered(open_, with_email))
refused(
    "forward-unrequire",
    open_,
    js(obj({"id": {"type": "string"}, "email": {"type": "string"}}, ["email"], False)),
)

# FULL: both ways.
registry.set_compatibility(open_, "FULL")
widened = js(
    obj({"id": {"type": ["string", "null"]}, "email": {"type": "string"}}, ["id", "email"], False)
)
print("full-check", registry.test_compatibility(open_, widened))
refused("full-widen", open_, widened)
described = js(
    obj(
        {"id": {"type": "string", "description": "the order's id"}, "email": {"type": "string"}},
        ["id", "email"],
        False,
    )
)
print("full-description", registered(open_, described))

refused("malformed-json", "jsr-bad-value", Schema('{"type": "object",', "JSON"))
refused("malformed-schema", "jsr-bad-value", js({"type": "object", "properties": {"id": {"type": 5}}}))

for subject in (closed, open_):
    print("versions", subject, ",".join(str(v) for v in registry.get_versions(subject)))
print("mode", open_, registry.get_compatibility(open_))
print("ok")
