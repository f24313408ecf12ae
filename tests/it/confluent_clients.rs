//! Stock Confluent clients against our registry and our records: schema_registry_converter
//! (Rust) and Confluent's own Python client (confluent-kafka with fastavro).

use hixbus_contracts::{Catalog, Codec, Event, EventRecord, SchemaIdStrategy, samples};
use hixbus_tests::{Backend, TestRegistry};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, get_all_versions, get_schema_by_id, is_compatible_schema,
    post_schema,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::codec::encode_all;

fn supplied(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned())
}

#[tokio::test]
async fn schema_registry_converter_registers_fetches_checks_and_sees_deletes() {
    let registry = TestRegistry::fresh(Backend::Postgres).await;
    let settings = SrSettings::new(registry.url.clone());
    let v1 = r#"{"type":"record","name":"Probe","fields":[{"name":"a","type":"string"}]}"#;
    let v2 = r#"{"type":"record","name":"Probe","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","int"],"default":null}]}"#;
    let drops_a = r#"{"type":"record","name":"Probe","fields":[]}"#;

    let registered = post_schema(&settings, "probe-value".into(), supplied(v1))
        .await
        .unwrap();
    let again = post_schema(&settings, "probe-value".into(), supplied(v1))
        .await
        .unwrap();
    assert_eq!(registered.id, again.id);
    let fetched = get_schema_by_id(registered.id, &settings).await.unwrap();
    assert_eq!(
        apache_avro::Schema::parse_str(&fetched.schema).unwrap(),
        apache_avro::Schema::parse_str(v1).unwrap()
    );
    assert_eq!(get_all_subjects(&settings).await.unwrap(), ["probe-value"]);
    assert_eq!(
        get_all_versions(&settings, "probe-value".into())
            .await
            .unwrap(),
        [1]
    );

    registry
        .client
        .set_compatibility_level(Some("probe-value"), "FULL")
        .await
        .unwrap();
    assert!(
        is_compatible_schema(&settings, "probe-value".into(), supplied(v2))
            .await
            .unwrap()
    );
    assert!(
        !is_compatible_schema(&settings, "probe-value".into(), supplied(drops_a))
            .await
            .unwrap()
    );

    registry
        .client
        .delete_subject("probe-value", false)
        .await
        .unwrap();
    assert!(
        get_all_versions(&settings, "probe-value".into())
            .await
            .is_err()
    );
    // Old records stay decodable after a soft delete (the converter asks with deleted=true).
    assert!(get_schema_by_id(registered.id, &settings).await.is_ok());
    registry
        .client
        .delete_subject("probe-value", true)
        .await
        .unwrap();
    assert!(get_schema_by_id(registered.id, &settings).await.is_err());
}

fn strategy_for(event: &Event) -> SubjectNameStrategy {
    let entry = Catalog::embedded().entry(event.name()).unwrap();
    if entry.is_per_recipient() {
        // Per-insurer and per-project topics: one subject for all of them.
        SubjectNameStrategy::RecordNameStrategy(entry.full_name.clone())
    } else if entry.subject.ends_with("-value") {
        SubjectNameStrategy::TopicNameStrategy(entry.topic.clone(), false)
    } else {
        SubjectNameStrategy::TopicRecordNameStrategy(entry.topic.clone(), entry.full_name.clone())
    }
}

async fn converter_encode<E: EventRecord>(
    encoder: &AvroEncoder,
    event: &E,
    strategy: &SubjectNameStrategy,
) -> Vec<u8> {
    encoder.encode_struct(event, strategy).await.unwrap()
}

#[tokio::test]
async fn our_records_and_the_converters_records_are_interchangeable() {
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let ours = Codec::new(registry.client.clone(), SchemaIdStrategy::Register);
    let events = samples::one_of_each("患者-42");
    let encoded = encode_all(&ours, &events).await;

    let settings = SrSettings::new(registry.url.clone());
    let decoder = AvroDecoder::new(settings.clone());
    let encoder = AvroEncoder::new(settings);
    for (event, record) in events.iter().zip(&encoded) {
        // Theirs reads ours.
        let theirs = decoder.decode(Some(&record.payload)).await.unwrap();
        assert_eq!(
            theirs.name.unwrap().fullname(None),
            Catalog::embedded().entry(event.name()).unwrap().full_name
        );
        let as_json = serde_json::to_value(
            apache_avro::from_value::<serde_json::Value>(&theirs.value).unwrap(),
        )
        .unwrap();
        assert_eq!(
            as_json["envelope"]["patient_ref"],
            event.envelope().patient_ref.as_str(),
            "{}",
            event.name()
        );
        assert_eq!(
            as_json["envelope"]["event_id"],
            event.envelope().event_id.as_str()
        );

        // Ours reads theirs, byte-identical to what we write.
        let strategy = strategy_for(event);
        let bytes = match event {
            Event::PrescriptionIssued(e) => converter_encode(&encoder, e, &strategy).await,
            Event::PrescriptionCancelled(e) => converter_encode(&encoder, e, &strategy).await,
            Event::PrescriptionClaimed(e) => converter_encode(&encoder, e, &strategy).await,
            Event::PrescriptionDispensed(e) => converter_encode(&encoder, e, &strategy).await,
            Event::LabResultReported(e) => converter_encode(&encoder, e, &strategy).await,
            Event::CheckupCompleted(e) => converter_encode(&encoder, e, &strategy).await,
            Event::ClaimSubmitted(e) => converter_encode(&encoder, e, &strategy).await,
            Event::ClaimEvidence(e) => converter_encode(&encoder, e, &strategy).await,
            Event::ClaimAdjudicated(e) => converter_encode(&encoder, e, &strategy).await,
            Event::ConsentChanged(e) => converter_encode(&encoder, e, &strategy).await,
            Event::MedicationAlert(e) => converter_encode(&encoder, e, &strategy).await,
            Event::PatientLinked(e) => converter_encode(&encoder, e, &strategy).await,
            Event::PatientDataAccessed(e) => converter_encode(&encoder, e, &strategy).await,
            Event::ResearchRecord(e) => converter_encode(&encoder, e, &strategy).await,
            Event::ResearchReleased(e) => converter_encode(&encoder, e, &strategy).await,
        };
        assert_eq!(
            bytes,
            record.payload,
            "{}: same bytes from both encoders",
            event.name()
        );
        let back = ours.decode(&bytes).await.unwrap().unwrap();
        assert_eq!(&back.event, event);
    }
}

/// Runs `tests/python/confluent_client_check.py` with Confluent's Python client: it reads the
/// records we wrote, writes records of its own for us to read, and exercises the registry API.
#[tokio::test]
async fn confluents_python_client_reads_our_records_and_writes_records_we_read() {
    let python = std::env::var("HIXBUS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = std::process::Command::new(&python)
        .args([
            "-c",
            "import confluent_kafka.schema_registry.avro, fastavro",
        ])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "Confluent's Python client is required: run the tests with `tests/run`, which installs it, \
         or `pip install confluent-kafka fastavro httpx attrs cachetools authlib` and set HIXBUS_PYTHON"
    );

    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let ours = Codec::new(registry.client.clone(), SchemaIdStrategy::Register);
    let events = samples::one_of_each("患者-py");
    let encoded = encode_all(&ours, &events).await;
    let records: Vec<serde_json::Value> = events
        .iter()
        .zip(&encoded)
        .map(|(event, record)| {
            serde_json::json!({
                "topic": Catalog::embedded().entry(event.name()).unwrap().topic,
                "event_type": event.name(),
                "event_id": event.envelope().event_id,
                "patient_ref": event.envelope().patient_ref,
                "hex": hex(&record.payload),
            })
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("hixbus-py-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("ours.json");
    let output = dir.join("theirs.json");
    std::fs::write(&input, serde_json::to_vec(&records).unwrap()).unwrap();

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/confluent_client_check.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&registry.url)
        .arg(&input)
        .arg(&output)
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let theirs: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    assert!(!theirs.is_empty());
    for record in theirs {
        let bytes = unhex(record["hex"].as_str().unwrap());
        let decoded = ours.decode(&bytes).await.unwrap().unwrap();
        let Event::ConsentChanged(consent) = decoded.event else {
            panic!("python wrote a ConsentChanged");
        };
        assert_eq!(
            consent.envelope.patient_ref,
            record["patient_ref"].as_str().unwrap()
        );
        assert_eq!(consent.consent_id, record["consent_id"].as_str().unwrap());
        assert_eq!(
            consent.valid_until.map(|t| t.unix_millis()),
            record["valid_until"].as_i64()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
