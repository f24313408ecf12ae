//! The codec's typed path against apache-avro's generic `Value` path (what
//! schema_registry_converter does: `to_value`, validate, encode; decode to `Value`, `from_value`),
//! on the same schema and the same events, in one run. A third side, apache-avro's own serde
//! straight to and from bytes (the codec's path until serde_avro_fast replaced it), shows what
//! that choice is worth. Results: docs/performance.md.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hixbus_contracts::{
    Catalog, Event, PrescriptionIssued, decode_body, encode_body, samples, wire,
};
use std::hint::black_box;

/// The allocator every hixbus binary runs with; both sides of the comparison use it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cases() -> Vec<(&'static str, PrescriptionIssued)> {
    vec![
        (
            "3-line prescription",
            samples::prescription_issued("患者-0001", 3),
        ),
        (
            "12-line prescription",
            samples::prescription_issued("患者-0002", 12),
        ),
    ]
}

fn encode(c: &mut Criterion) {
    let schema = &Catalog::embedded()
        .entry("PrescriptionIssued")
        .unwrap()
        .schema;
    let generic_writer = GenericDatumWriter::builder(schema).build().unwrap();
    let serde_writer = GenericDatumWriter::builder(schema)
        .human_readable(false)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("encode");
    for (name, rx) in cases() {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("hixbus typed", name), &rx, |b, rx| {
            b.iter(|| {
                let mut buf = Vec::with_capacity(256);
                wire::write_header(&mut buf, 7);
                encode_body(black_box(rx), &mut buf).unwrap();
                buf
            })
        });
        group.bench_with_input(BenchmarkId::new("avro serde", name), &rx, |b, rx| {
            b.iter(|| {
                let mut buf = Vec::with_capacity(256);
                wire::write_header(&mut buf, 7);
                serde_writer.write_ser(&mut buf, black_box(rx)).unwrap();
                buf
            })
        });
        group.bench_with_input(
            BenchmarkId::new("avro generic Value", name),
            &rx,
            |b, rx| {
                b.iter(|| {
                    let value = apache_avro::to_value(black_box(rx)).unwrap();
                    let mut buf = Vec::with_capacity(256);
                    wire::write_header(&mut buf, 7);
                    generic_writer.write_value(&mut buf, value).unwrap();
                    buf
                })
            },
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let schema = &Catalog::embedded()
        .entry("PrescriptionIssued")
        .unwrap()
        .schema;
    let generic_reader = GenericDatumReader::builder(schema).build().unwrap();
    let serde_reader = GenericDatumReader::builder(schema)
        .human_readable(false)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("decode");
    for (name, rx) in cases() {
        let mut body = Vec::new();
        encode_body(&rx, &mut body).unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("hixbus typed", name), &body, |b, body| {
            b.iter(|| decode_body("PrescriptionIssued", black_box(body)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("avro serde", name), &body, |b, body| {
            b.iter(|| {
                Event::PrescriptionIssued(
                    serde_reader
                        .read_deser::<PrescriptionIssued>(&mut black_box(body.as_slice()))
                        .unwrap(),
                )
            })
        });
        group.bench_with_input(
            BenchmarkId::new("avro generic Value", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let value = generic_reader
                        .read_value(&mut black_box(body.as_slice()))
                        .unwrap();
                    Event::PrescriptionIssued(
                        apache_avro::from_value::<PrescriptionIssued>(&value).unwrap(),
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = encode, decode
}
criterion_main!(benches);
