//! Records per second through the export's release at k = 5 — items of a generated population
//! de-identified (pseudonyms, date shifts, age bands, sex, regions), made k-anonymous and encoded
//! as Avro — against a baseline in the same run that encodes the same items as records with
//! none of that (fields copied as they are). The ratio is the price of safety. Results:
//! docs/performance.md.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hixbus_contracts::{Envelope, Event, ResearchMode, ResearchRecord, encode_body};
use hixbus_research::items::{self, Keyed};
use hixbus_research::population::Population;
use hixbus_research::projects::{FIELDS, Project, ProjectKey};
use hixbus_research::release::prepare;
use hixbus_research::store::{Claimed, Demographics};

fn project() -> Project {
    Project {
        id: "bench".into(),
        researcher: "univ-research".into(),
        purpose: "benchmark".into(),
        mode: ResearchMode::Pseudonymized,
        k: 5,
        events: Default::default(),
        fields: FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        quasi_identifiers: vec!["age_band".into(), "sex".into(), "region".into()],
        opt_in: false,
        max_suppressed_percent: 10,
    }
}

/// The items of a 2,000-patient population, as a release claims them, and what is known of
/// each patient.
fn batch() -> (Vec<Claimed>, HashMap<String, Demographics>) {
    let population = Population::generate(42, 2_000);
    let births = population
        .patients
        .iter()
        .map(|p| {
            let known = Demographics {
                birth: Some(p.birth_date),
                sex: Some(p.sex.as_str().to_owned()),
            };
            (p.patient_ref.clone(), known)
        })
        .collect();
    let keyed: Vec<Keyed> = population
        .events
        .iter()
        .flat_map(|e| match e {
            Event::PrescriptionIssued(e) => items::prescribed(e),
            Event::PrescriptionDispensed(e) => items::dispensed(e),
            Event::LabResultReported(e) => items::lab_results(e),
            Event::CheckupCompleted(e) => items::checkup_items(e),
            _ => Vec::new(),
        })
        .collect();
    let claimed = keyed
        .into_iter()
        .map(|(item_key, item)| Claimed {
            item_key,
            patient_ref: item.patient_ref.clone(),
            item,
        })
        .collect();
    (claimed, births)
}

/// The baseline: the same items as records, copied as they are, encoded.
fn plain(claimed: &[Claimed]) -> usize {
    let mut bytes = 0;
    let mut buf = Vec::with_capacity(512);
    for c in claimed {
        let i = &c.item;
        let record = ResearchRecord {
            envelope: Envelope {
                event_id: c.item_key.clone(),
                ..Envelope::new("bench", &c.patient_ref)
            },
            project: "bench".into(),
            kind: i.kind,
            institution: Some(i.institution_org.clone()),
            day: Some(i.day),
            age_band: None,
            region: i.institution_code.clone(),
            code_system: i.code_system.clone(),
            code: i.code.clone(),
            display: i.display.clone(),
            value: i.value,
            unit: i.unit.clone(),
            days_supply: i.days_supply,
            quantity: i.quantity,
            sex: None,
        };
        buf.clear();
        encode_body(&record, &mut buf).unwrap();
        bytes += buf.len();
    }
    bytes
}

/// The export: de-identify, make k-anonymous, build, encode.
fn export(claimed: &[Claimed], births: &HashMap<String, Demographics>) -> usize {
    let project = project();
    let key = ProjectKey::new("bench", vec![7; 32]);
    let eligible: Vec<&Claimed> = claimed.iter().collect();
    let (_, prepared) = prepare(&project, &key, "release-bench", &eligible, births);
    let (_, records) = prepared.expect("the population is k-anonymous after generalization");
    let mut bytes = 0;
    let mut buf = Vec::with_capacity(512);
    for r in &records {
        buf.clear();
        encode_body(r, &mut buf).unwrap();
        bytes += buf.len();
    }
    bytes
}

fn release(c: &mut Criterion) {
    let (claimed, births) = batch();
    let mut group = c.benchmark_group("release");
    group.throughput(Throughput::Elements(claimed.len() as u64));
    let name = format!("{} items of 2,000 patients, k = 5", claimed.len());
    group.bench_with_input(
        BenchmarkId::new("plain records (baseline)", &name),
        &claimed,
        |b, claimed| b.iter(|| plain(black_box(claimed))),
    );
    group.bench_with_input(
        BenchmarkId::new("de-identified, k-anonymous", &name),
        &claimed,
        |b, claimed| b.iter(|| export(black_box(claimed), &births)),
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(5));
    targets = release
}
criterion_main!(benches);
