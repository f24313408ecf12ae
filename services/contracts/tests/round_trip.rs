//! Every event type survives encode → decode unchanged, with the embedded schemas, and the
//! codec's fast path writes and reads exactly what apache-avro does.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use hixbus_contracts::{Catalog, DataError, Event, EventRecord, decode_body, encode_body, samples};

fn round_trip<E: EventRecord + PartialEq + std::fmt::Debug>(event: E) {
    let mut body = Vec::new();
    encode_body(&event, &mut body).unwrap_or_else(|e| panic!("{}: {e}", E::NAME));
    same_as_apache_avro(&event, &body);
    let decoded = decode_body(E::NAME, &body).unwrap_or_else(|e| panic!("{}: {e}", E::NAME));
    assert_eq!(decoded, event.into());
}

/// apache-avro, a second implementation of the Avro specification, writes the same bytes for the
/// event and reads the codec's bytes back unchanged: the codec's fast path (serde_avro_fast)
/// cannot drift from what other Avro clients write and read.
fn same_as_apache_avro<E: EventRecord + PartialEq + std::fmt::Debug>(event: &E, body: &[u8]) {
    let schema = &Catalog::embedded().entry(E::NAME).unwrap().schema;
    let mut theirs = Vec::new();
    GenericDatumWriter::builder(schema)
        .human_readable(false)
        .build()
        .unwrap()
        .write_ser(&mut theirs, event)
        .unwrap_or_else(|e| panic!("{}: {e}", E::NAME));
    assert_eq!(
        body,
        theirs,
        "{} is written as apache-avro writes it",
        E::NAME
    );
    let mut rest = body;
    let value = GenericDatumReader::builder(schema)
        .human_readable(false)
        .build()
        .unwrap()
        .read_value(&mut rest)
        .unwrap_or_else(|e| panic!("{}: {e}", E::NAME));
    assert!(
        rest.is_empty(),
        "{}: apache-avro left bytes unread",
        E::NAME
    );
    assert_eq!(&apache_avro::from_value::<E>(&value).unwrap(), event);
}

#[test]
fn every_event_type_round_trips() {
    for event in samples::one_of_each("pt-0001") {
        match event {
            Event::PrescriptionIssued(e) => round_trip(e),
            Event::PrescriptionCancelled(e) => round_trip(e),
            Event::PrescriptionClaimed(e) => round_trip(e),
            Event::PrescriptionDispensed(e) => round_trip(e),
            Event::LabResultReported(e) => round_trip(e),
            Event::CheckupCompleted(e) => round_trip(e),
            Event::ClaimSubmitted(e) => round_trip(e),
            Event::ClaimEvidence(e) => round_trip(e),
            Event::ClaimAdjudicated(e) => round_trip(e),
            Event::ConsentChanged(e) => round_trip(e),
            Event::MedicationAlert(e) => round_trip(e),
            Event::PatientLinked(e) => round_trip(e),
            Event::PatientDataAccessed(e) => round_trip(e),
            Event::ResearchRecord(e) => round_trip(e),
            Event::ResearchReleased(e) => round_trip(e),
        }
    }
}

#[test]
fn absent_optional_fields_round_trip() {
    round_trip(samples::prescription_issued_minimal("pt-0002"));
}

#[test]
fn the_largest_realistic_prescription_round_trips() {
    let big = samples::prescription_issued("pt-0003", 15);
    assert_eq!(big.lines.len(), 15);
    round_trip(big);
}

#[test]
fn japanese_text_survives_byte_for_byte() {
    let rx = samples::prescription_issued("患者-0004", 2);
    let mut body = Vec::new();
    encode_body(&rx, &mut body).unwrap();
    let Event::PrescriptionIssued(back) = decode_body("PrescriptionIssued", &body).unwrap() else {
        panic!("wrong event type");
    };
    assert_eq!(back.envelope.patient_ref, "患者-0004");
    assert_eq!(
        back.lines[0].drug.display.as_deref(),
        Some("ムコダイン錠２５０ｍｇ")
    );
    assert_eq!(back.lines[0].timing_text, "1日3回朝昼夕食後");
}

#[test]
fn truncated_or_padded_bodies_are_data_errors() {
    let mut body = Vec::new();
    encode_body(&samples::consent_changed("pt-5"), &mut body).unwrap();
    let truncated = &body[..body.len() - 3];
    assert!(matches!(
        decode_body("ConsentChanged", truncated),
        Err(DataError::Body { .. })
    ));
    let mut padded = body.clone();
    padded.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(
        decode_body("ConsentChanged", &padded),
        Err(DataError::Body { reason, .. }) if reason.contains("3 unread bytes")
    ));
}
