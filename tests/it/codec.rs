//! The codec against a live registry: framing, id caching, evolution, and the split between
//! records that can never decode and a registry that is merely unreachable.

use apache_avro::types::Value as AvroValue;
use hixbus_contracts::registry::RegistryClient;
use hixbus_contracts::{
    Catalog, Codec, DataError, EncodeError, Event, SchemaIdStrategy, gate, samples, wire,
};
use hixbus_tests::{Backend, TestRegistry};

fn codec(registry: &TestRegistry, strategy: SchemaIdStrategy) -> Codec {
    Codec::new(registry.client.clone(), strategy)
}

async fn encode_event(codec: &Codec, event: &Event) -> hixbus_contracts::Encoded {
    let encoded = match event {
        Event::PrescriptionIssued(e) => codec.encode(e).await,
        Event::PrescriptionCancelled(e) => codec.encode(e).await,
        Event::PrescriptionClaimed(e) => codec.encode(e).await,
        Event::PrescriptionDispensed(e) => codec.encode(e).await,
        Event::LabResultReported(e) => codec.encode(e).await,
        Event::CheckupCompleted(e) => codec.encode(e).await,
        Event::ClaimSubmitted(e) => codec.encode(e).await,
        Event::ClaimEvidence(e) => codec.encode(e).await,
        Event::ClaimAdjudicated(e) => codec.encode(e).await,
        Event::ConsentChanged(e) => codec.encode(e).await,
        Event::MedicationAlert(e) => codec.encode(e).await,
        Event::PatientLinked(e) => codec.encode(e).await,
        Event::PatientDataAccessed(e) => codec.encode(e).await,
        Event::ResearchRecord(e) => codec.encode(e).await,
        Event::ResearchReleased(e) => codec.encode(e).await,
    };
    encoded.unwrap_or_else(|e| panic!("{}: {e}", event.name()))
}

pub async fn encode_all(codec: &Codec, events: &[Event]) -> Vec<hixbus_contracts::Encoded> {
    let mut out = Vec::new();
    for event in events {
        out.push(encode_event(codec, event).await);
    }
    out
}

#[tokio::test]
async fn every_event_round_trips_through_the_registry() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let codec = codec(&registry, SchemaIdStrategy::Register);
    let mut events = samples::one_of_each("患者-0001");
    events.push(samples::prescription_issued("pt-big", 12).into());
    events.push(samples::prescription_issued_minimal("pt-min").into());
    for (event, encoded) in events.iter().zip(encode_all(&codec, &events).await) {
        let entry = Catalog::embedded().entry(event.name()).unwrap();
        let registered = registry
            .client
            .lookup(&entry.subject, &entry.schema_json)
            .await
            .unwrap();
        let (id, _) = wire::split(&encoded.payload).unwrap();
        assert_eq!(
            (id, encoded.schema_id),
            (registered.id, registered.id),
            "{}",
            event.name()
        );

        // A fresh codec knows nothing: it must fetch the writer schema by id.
        let decoded = Codec::new(registry.client.clone(), SchemaIdStrategy::Lookup)
            .decode(&encoded.payload)
            .await
            .expect("registry reachable")
            .expect("decodes");
        assert_eq!(&decoded.event, event);
    }
}

#[tokio::test]
async fn lookup_strategy_refuses_unregistered_schemas_until_the_gate_registers_them() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let rx = samples::prescription_issued("pt-1", 2);
    let strict = codec(&registry, SchemaIdStrategy::Lookup);
    match strict.encode(&rx).await {
        Err(EncodeError::Schema { subject, reason }) => {
            assert_eq!(subject, "prescriptions-hixbus.events.PrescriptionIssued");
            assert!(reason.contains("hixbus schemas register"), "{reason}");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    gate::register(&registry.client, Catalog::embedded())
        .await
        .unwrap();
    let encoded = strict.encode(&rx).await.unwrap();
    assert_eq!(
        strict
            .decode(&encoded.payload)
            .await
            .unwrap()
            .unwrap()
            .event,
        Event::PrescriptionIssued(rx)
    );
}

#[tokio::test]
async fn bad_records_are_data_errors_and_an_unreachable_registry_is_transient() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let codec = codec(&registry, SchemaIdStrategy::Register);
    let encoded = codec
        .encode(&samples::consent_changed("pt-2"))
        .await
        .unwrap();

    let not_framed = codec.decode(br#"{"json": true}"#).await.unwrap();
    assert!(
        matches!(not_framed, Err(DataError::Framing(_))),
        "{not_framed:?}"
    );
    let unknown_id = codec.decode(&[0, 0, 0, 0x30, 0x39, 2, 4]).await.unwrap();
    assert_eq!(unknown_id, Err(DataError::UnknownSchemaId(12345)));
    let mut truncated = encoded.payload.clone();
    truncated.truncate(truncated.len() - 4);
    assert!(matches!(
        codec.decode(&truncated).await.unwrap(),
        Err(DataError::Body { .. })
    ));

    // A schema that is not a hixbus event.
    let foreign = registry
        .client
        .register(
            "other-value",
            r#"{"type":"record","name":"Foreign","fields":[]}"#,
        )
        .await
        .unwrap();
    let mut record = Vec::new();
    wire::write_header(&mut record, foreign);
    assert!(matches!(
        codec.decode(&record).await.unwrap(),
        Err(DataError::UnknownEventType { full_name, .. }) if full_name == "Foreign"
    ));

    // The registry goes away: a codec that has not cached the id cannot know if the record is
    // good, so it must ask to be retried, not dead-letter it.
    let url = registry.url.clone();
    registry.stop().await;
    let cold = Codec::new(RegistryClient::new(&url).unwrap(), SchemaIdStrategy::Lookup);
    let transient = cold.decode(&encoded.payload).await;
    assert!(transient.is_err(), "{transient:?}");
    // The warm codec cached the id and still decodes.
    assert!(codec.decode(&encoded.payload).await.unwrap().is_ok());
}

#[tokio::test]
async fn records_written_with_an_older_schema_version_are_resolved() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let entry = Catalog::embedded().entry("ConsentChanged").unwrap();
    // An older ConsentChanged without `valid_until`, as an early producer would have written it.
    let mut old: serde_json::Value = serde_json::from_str(&entry.schema_json).unwrap();
    let fields = old["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "valid_until");
    let old_text = old.to_string();
    let old_schema = apache_avro::Schema::parse_str(&old_text).unwrap();
    let old_id = registry
        .client
        .register(&entry.subject, &old_text)
        .await
        .unwrap();

    let current = samples::consent_changed("pt-3");
    let full = apache_avro::to_value(&current).unwrap();
    let AvroValue::Record(mut record) = full else {
        panic!("record")
    };
    record.retain(|(name, _)| name != "valid_until");
    let value = AvroValue::Record(record)
        .resolve(&old_schema)
        .expect("value fits the old schema");
    let mut payload = Vec::new();
    wire::write_header(&mut payload, old_id);
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&old_schema)
        .build()
        .unwrap();
    payload.extend(writer.write_value_to_vec(value).unwrap());

    let codec = codec(&registry, SchemaIdStrategy::Lookup);
    let decoded = codec.decode(&payload).await.unwrap().unwrap();
    let expected = hixbus_contracts::ConsentChanged {
        valid_until: None,
        ..current
    };
    assert_eq!(decoded.event, Event::ConsentChanged(expected));
    assert_eq!(decoded.schema_id, old_id);
}

/// A service starting under load once sent one lookup per request until the first answer came
/// back, exhausting the registry's connections: a cold cache is filled by one request.
#[tokio::test]
async fn concurrent_misses_ask_the_registry_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the announced body.
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let body = r#"{"subject":"s","version":1,"id":7,"schema":"\"string\""}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    let codec = Arc::new(Codec::new(
        RegistryClient::new(&url).unwrap(),
        SchemaIdStrategy::Lookup,
    ));
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let codec = codec.clone();
        all.spawn(async move { codec.schema_id("PrescriptionIssued").await.unwrap() });
    }
    let ids = all.join_all().await;
    assert!(ids.iter().all(|id| *id == 7));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}
