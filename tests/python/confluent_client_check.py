"""Confluent's own Python client against a hixbus registry and hixbus records.

Usage: confluent_client_check.py REGISTRY_URL OURS.json THEIRS.json

1. Exercises the registry API with SchemaRegistryClient (register, fetch, compatibility, deletes)
   and checks the error codes it surfaces.
2. Decodes every record in OURS.json (written by hixbus's Rust codec) with AvroDeserializer.
3. Encodes ConsentChanged records with AvroSerializer into THEIRS.json for the Rust side to decode.
Exits non-zero with a message on the first mismatch.
"""

import json
import sys
import warnings

# authlib (pulled in by confluent-kafka) warns about its httpx module on import; not ours to fix.
warnings.filterwarnings("ignore", category=DeprecationWarning)

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext


def check_registry_api(client, url):
    v1 = Schema('{"type":"record","name":"PyProbe","fields":[{"name":"a","type":"string"}]}', "AVRO")
    v2 = Schema(
        '{"type":"record","name":"PyProbe","fields":[{"name":"a","type":"string"},'
        '{"name":"b","type":["null","int"],"default":null}]}',
        "AVRO",
    )
    drops_a = Schema('{"type":"record","name":"PyProbe","fields":[]}', "AVRO")
    schema_id = client.register_schema("py-probe-value", v1)
    assert client.register_schema("py-probe-value", v1) == schema_id, "registration is idempotent"
    assert json.loads(client.get_schema(schema_id).schema_str)["name"] == "PyProbe"
    assert client.get_latest_version("py-probe-value").version == 1
    assert client.lookup_schema("py-probe-value", v1).schema_id == schema_id
    client.set_compatibility("py-probe-value", "FULL")
    assert client.get_compatibility("py-probe-value") == "FULL"
    assert client.test_compatibility("py-probe-value", v2) is True
    assert client.test_compatibility("py-probe-value", drops_a) is False
    try:
        client.register_schema("py-probe-value", drops_a)
        raise AssertionError("an incompatible schema was registered")
    except SchemaRegistryError as e:
        assert e.http_status_code == 409 and e.error_code == 409, e
    assert client.delete_subject("py-probe-value") == [1]
    assert client.delete_subject("py-probe-value", permanent=True) == [1]
    assert "py-probe-value" not in client.get_subjects()
    # The client caches latest versions; a fresh one sees what the registry says now.
    fresh = SchemaRegistryClient({"url": url})
    try:
        fresh.get_latest_version("py-probe-value")
        raise AssertionError("a deleted subject is still there")
    except SchemaRegistryError as e:
        assert e.http_status_code == 404 and e.error_code == 40401, e


def decode_ours(client, path):
    deserializer = AvroDeserializer(client)
    records = json.load(open(path, encoding="utf-8"))
    for record in records:
        value = deserializer(
            bytes.fromhex(record["hex"]), SerializationContext(record["topic"], MessageField.VALUE)
        )
        envelope = value["envelope"]
        assert envelope["event_id"] == record["event_id"], (record["event_type"], envelope)
        assert envelope["patient_ref"] == record["patient_ref"], (record["event_type"], envelope)
        if record["event_type"] == "PrescriptionIssued":
            assert value["lines"][0]["drug"]["display"] == "ムコダイン錠２５０ｍｇ", value["lines"][0]
            assert value["lines"][0]["timing_text"] == "1日3回朝昼夕食後"
    return len(records)


def encode_theirs(client, path):
    latest = client.get_latest_version("consents-value")
    serializer = AvroSerializer(
        client,
        latest.schema.schema_str,
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    out = []
    for n, valid_until in enumerate([1_800_000_000_000, None]):
        consent = {
            "envelope": {
                "event_id": f"00000000-0000-7000-8000-00000000000{n}",
                "occurred_at": 1_711_900_000_000,
                "producer_org": "portal",
                "patient_ref": f"患者-python-{n}",
                "correlation_id": None,
                "causation_id": None,
            },
            "consent_id": f"cns-py-{n}",
            "grantee_org": "pharmacy-aozora",
            "purpose": "DISPENSING",
            "scope": ["PRESCRIPTIONS", "DISPENSATIONS"],
            "decision": "GRANTED",
            "valid_until": valid_until,
        }
        payload = serializer(consent, SerializationContext("consents", MessageField.VALUE))
        assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == latest.schema_id
        out.append(
            {
                "hex": payload.hex(),
                "patient_ref": consent["envelope"]["patient_ref"],
                "consent_id": consent["consent_id"],
                "valid_until": valid_until,
            }
        )
    json.dump(out, open(path, "w", encoding="utf-8"), ensure_ascii=False)
    return len(out)


def main():
    url, ours, theirs = sys.argv[1:4]
    client = SchemaRegistryClient({"url": url})
    check_registry_api(client, url)
    decoded = decode_ours(client, ours)
    encoded = encode_theirs(client, theirs)
    print(f"python confluent client: registry API ok, decoded {decoded} hixbus records, wrote {encoded}")


if __name__ == "__main__":
    main()
