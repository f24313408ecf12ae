"""Confluent's own Python client against a hixbus registry that imported another registry.

Usage: registry_import_check.py REGISTRY_URL EXPECTED.json

EXPECTED holds, for the subject imported, its latest version, that version's id and schema,
its compatibility level, and the id the next registration must get. Exits non-zero with a
message on the first mismatch.
"""

import json
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient


def main():
    url, expected_path = sys.argv[1], sys.argv[2]
    expected = json.load(open(expected_path))
    client = SchemaRegistryClient({"url": url})
    subject = expected["subject"]

    # The schema keeps the id it had: records written with the old registry resolve unchanged.
    by_id = client.get_schema(expected["id"])
    assert json.loads(by_id.schema_str) == json.loads(expected["schema"]), by_id.schema_str
    latest = client.get_latest_version(subject)
    assert latest.version == expected["version"], latest.version
    assert latest.schema_id == expected["id"], latest.schema_id
    assert client.get_version(subject, 1).schema_id == expected["first_id"]
    assert client.get_compatibility(subject) == expected["compatibility"]

    # After the import the registry is writable again, and new ids come after the imported.
    new = Schema(expected["next_schema"], "AVRO")
    assert client.register_schema(subject, new) == expected["next_id"]
    print("imported registry checks passed")


if __name__ == "__main__":
    main()
