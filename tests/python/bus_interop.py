"""Confluent's own Kafka client against the hixbus bus, on a real broker.

1. Reads N records hixbus published on TOPIC with confluent-kafka's DeserializingConsumer and
   AvroDeserializer (schemas fetched from the registry by the id in each record), and prints
   each decoded record as a JSON line.
2. Writes each of them back to TOPIC with SerializingProducer and AvroSerializer, using the
   subject's latest registered schema, with the event id prefixed by "py-", for hixbus to read.

usage: bus_interop.py BOOTSTRAP REGISTRY_URL TOPIC PATIENT N
"""

import json
import sys

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import StringDeserializer, StringSerializer


def main():
    bootstrap, registry_url, topic, patient, wanted = sys.argv[1:6]
    wanted = int(wanted)
    registry = SchemaRegistryClient({"url": registry_url})

    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "confluent-python-" + patient,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": AvroDeserializer(registry),
        }
    )
    consumer.subscribe([topic])
    ours = []
    polls = 0
    while len(ours) < wanted and polls < 600:
        polls += 1
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit(f"consumer error: {msg.error()}")
        value = msg.value()
        if value["envelope"]["patient_ref"] != patient:
            continue
        if msg.key() != patient:
            raise SystemExit(f"key {msg.key()!r} is not the patient reference {patient!r}")
        ours.append(value)
        print(json.dumps(value, ensure_ascii=False, default=str), flush=True)
    consumer.close()
    if len(ours) < wanted:
        raise SystemExit(f"read {len(ours)} of {wanted} records")

    latest = registry.get_latest_version(f"{topic}-value")
    producer = SerializingProducer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "key.serializer": StringSerializer("utf_8"),
            "value.serializer": AvroSerializer(
                registry,
                latest.schema.schema_str,
                conf={"auto.register.schemas": False, "use.latest.version": True},
            ),
        }
    )
    for value in ours:
        value["envelope"]["event_id"] = "py-" + value["envelope"]["event_id"]
        producer.produce(topic, key=patient, value=value)
    if producer.flush(30) != 0:
        raise SystemExit("records not delivered")


if __name__ == "__main__":
    main()
