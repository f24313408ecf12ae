"""Confluent's own Python client registers and reads schemas with references through a hixbus
registry, and its Avro serializer and deserializer resolve them; it normalizes, asks where a
schema id is used, and freezes and unfreezes a subject with /mode.

Usage: registry_references_check.py REGISTRY_URL

Exits non-zero with a message on the first mismatch.
"""

import json
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

ADDRESS = json.dumps({
    "type": "record", "name": "Address", "namespace": "com.example",
    "fields": [{"name": "street", "type": "string"}, {"name": "city", "type": "string"}],
})
PERSON = json.dumps({
    "type": "record", "name": "Person", "namespace": "com.example",
    "fields": [{"name": "name", "type": "string"}, {"name": "home", "type": "com.example.Address"}],
})
PERSON_WITH_EMAIL = json.dumps({
    "type": "record", "name": "Person", "namespace": "com.example",
    "fields": [{"name": "name", "type": "string"}, {"name": "home", "type": "com.example.Address"},
               {"name": "email", "type": ["null", "string"], "default": None}],
})
# The same schema written another way: other key order, other whitespace.
PERSON_REWRITTEN = """{ "fields": [ {"type": "string", "name": "name"},
    {"name": "home", "type": "com.example.Address"} ],
  "namespace": "com.example", "type": "record", "name": "Person" }"""


def main():
    url = sys.argv[1]
    client = SchemaRegistryClient({"url": url})

    address_id = client.register_schema("com.example.Address", Schema(ADDRESS, "AVRO"))
    reference = SchemaReference("com.example.Address", "com.example.Address", 1)
    person_id = client.register_schema("people-value", Schema(PERSON, "AVRO", [reference]))
    assert person_id != address_id, (person_id, address_id)
    # normalize=true (what Confluent's clients send for normalized registration) finds the same.
    again = client.register_schema(
        "people-value", Schema(PERSON_REWRITTEN, "AVRO", [reference]), normalize_schemas=True
    )
    assert again == person_id, (again, person_id)

    # A client with an empty cache reads the references back, by id and by version.
    fresh = SchemaRegistryClient({"url": url})
    by_id = fresh.get_schema(person_id)
    refs = [(r.name, r.subject, r.version) for r in by_id.references]
    assert refs == [("com.example.Address", "com.example.Address", 1)], refs
    latest = fresh.get_latest_version("people-value")
    assert latest.schema_id == person_id and latest.version == 1, latest
    assert [r.subject for r in latest.schema.references] == ["com.example.Address"]
    found = fresh.lookup_schema("people-value", Schema(PERSON, "AVRO", [reference]))
    assert found.schema_id == person_id, found
    assert fresh.get_referenced_by("com.example.Address", 1) == [person_id]

    # Records round-trip: the serializer writes with the latest version, resolving Address
    # through the reference; the deserializer reads by id and resolves it again.
    serializer = AvroSerializer(
        client,
        Schema(PERSON, "AVRO", [reference]),
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}))
    context = SerializationContext("people", MessageField.VALUE)
    record = {"name": "Hanako", "home": {"street": "1-1 Chiyoda", "city": "Tokyo"}}
    data = serializer(record, context)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == person_id, data[:5]
    assert deserializer(data, context) == record

    # Where a schema id is used, as Confluent's client asks.
    assert fresh.get_subjects_by_schema_id(person_id) == ["people-value"]
    versions = fresh.get_schema_versions(person_id)
    assert [(v.subject, v.version) for v in versions] == [("people-value", 1)], versions

    # A frozen subject refuses registrations and says why; unfreezing drops its own mode.
    assert client.update_mode("people-value", "READONLY") == "READONLY"
    assert client.get_mode("people-value") == "READONLY"
    try:
        client.register_schema("people-value", Schema(PERSON_WITH_EMAIL, "AVRO", [reference]))
    except SchemaRegistryError as e:
        assert e.error_code == 42205, e
    else:
        raise AssertionError("registered under a READONLY subject")
    assert client.delete_mode("people-value") == "READONLY"
    assert client.get_global_mode() == "READWRITE"
    new_id = client.register_schema("people-value", Schema(PERSON_WITH_EMAIL, "AVRO", [reference]))
    assert new_id > person_id and fresh.get_versions("people-value") == [1, 2]

    # What is referenced cannot be deleted.
    try:
        client.delete_version("com.example.Address", 1)
    except SchemaRegistryError as e:
        assert e.error_code == 42206, e
    else:
        raise AssertionError("deleting a referenced version succeeded")
    assert fresh.get_versions("com.example.Address") == [1]
    print("schema reference checks passed")


if __name__ == "__main__":
    main()
