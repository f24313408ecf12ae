//! Throughput and latency of the bus runtime against bare rdkafka, on the same real broker, with
//! the same payload, in one run. Not a test: it prints a table for docs/performance.md.
//!
//!   cargo bench -p hixbus-bus --bench throughput
//!
//! The broker is `HIXBUS_BENCH_BOOTSTRAP_SERVERS` if set, else a Tansu broker (memory engine)
//! started from `~/.cargo/bin/tansu` for the run. `HIXBUS_BENCH_RECORDS` sets the count.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hixbus_bus::config::Role;
use hixbus_bus::topics::{self, TopicSpec};
use hixbus_bus::{Consumer, EventContext, KafkaConfig, Publisher};
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use hixbus_contracts::registry::RegistryClient;
use hixbus_contracts::{Catalog, PrescriptionIssued, samples};
use hixbus_schema_registry::{RegistryConfig, RegistryServer};
use rdkafka::Message;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::Notify;

const IN_FLIGHT: usize = 1000;
/// Turns each side takes at publishing and consuming.
const ROUNDS: usize = 4;
const BARE_TOPIC: &str = "bench-bare";

/// The allocator the `hixbus` binary runs with; both sides of the comparison use it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: keep that to a quick
    // smoke run that proves the benchmark still works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let records: usize = std::env::var("HIXBUS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 300 } else { 20_000 });
    let latency_records = if smoke { 50 } else { 2_000 };
    if smoke {
        println!("smoke run (no --bench): the numbers below mean nothing");
    }
    // Spans and logs as in every hixbus process (OpenTelemetry spans per record, nothing
    // exported, warnings logged): their cost is part of the runtime's.
    let _telemetry =
        hixbus_service::telemetry::init_logging_to("hixbus-bench", "warn", false, std::io::stderr);
    let (bootstrap, _broker) = broker();
    let kafka = KafkaConfig::new(&bootstrap).with_client_id("hixbus-bench");
    let mut specs = topics::specs(topics::EMBEDDED, Catalog::embedded()).unwrap();
    let prescriptions = specs
        .iter()
        .find(|s| s.name == "prescriptions")
        .unwrap()
        .clone();
    specs.push(TopicSpec {
        name: BARE_TOPIC.to_owned(),
        ..prescriptions.clone()
    });
    topics::create(&kafka, &specs).await.unwrap();

    let server = RegistryServer::build(RegistryConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "sqlite::memory:",
    ))
    .await
    .unwrap();
    let registry_url = server.url();
    tokio::spawn(server.run_until(std::future::pending()));
    let codec = Arc::new(Codec::new(
        RegistryClient::new(&registry_url).unwrap(),
        SchemaIdStrategy::Register,
    ));

    let events: Vec<PrescriptionIssued> = (0..records)
        .map(|n| samples::prescription_issued(&format!("patient-{}", n % 500), 3))
        .collect();
    let payload = codec.encode(&events[0]).await.unwrap().payload;
    println!(
        "broker {bootstrap}, {records} records of {} bytes (3-line PrescriptionIssued), {IN_FLIGHT} in flight",
        payload.len()
    );

    // Publish, in rounds that alternate the sides (and which goes first), so that a slow spell
    // of the shared cores falls on both sides instead of on whichever one it hit.
    let bare_producer: FutureProducer = kafka.to_rdkafka(Role::Producer).create().unwrap();
    let publisher = Publisher::new(&kafka, codec.clone()).unwrap();
    // A producer's first acknowledgement waits for its connections and its idempotent producer
    // id, about half a second on Tansu: longer than either side's whole timed share. Each side
    // gets one acknowledged record before the clock starts (it was timed once, on whichever side
    // went first, and that was most of the run-to-run spread of this ratio).
    bare_publish_all(&bare_producer, &payload, &events[..1]).await;
    runtime_publish_all(&publisher, &events[..1]).await;
    let (mut bare_publish, mut runtime_publish) = (Duration::ZERO, Duration::ZERO);
    for (round, events) in events.chunks(records.div_ceil(ROUNDS)).enumerate() {
        let (bare, ours) = take_turns(
            round,
            || timed(|| bare_publish_all(&bare_producer, &payload, events)),
            || timed(|| runtime_publish_all(&publisher, events)),
        )
        .await;
        bare_publish += bare;
        runtime_publish += ours;
    }

    // Consume: each side reads its whole topic again in every round, as a new group (timed from
    // the first record, so group joins do not count), the sides taking turns as above. One read
    // of a few thousand records takes tens of milliseconds, too short to time once.
    let (mut bare_consume, mut runtime_consume) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let (bare, ours) = take_turns(
            round,
            || bare_consume_all(&kafka, round, records),
            || runtime_consume_all(&kafka, &codec, round, records),
        )
        .await;
        bare_consume += bare;
        runtime_consume += ours;
    }
    let (bare_consume, runtime_consume) = (
        bare_consume / ROUNDS as u32,
        runtime_consume / ROUNDS as u32,
    );

    // End-to-end latency at a steady rate, well below saturation.
    let every = Duration::from_millis(2);
    let latency = latency(&kafka, &codec, &publisher, latency_records, every).await;
    let bare_latency = bare_latency(&kafka, &bare_producer, &payload, latency_records, every).await;

    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!();
    println!("| Operation | bare rdkafka | hixbus runtime | runtime / bare |");
    println!("|---|---|---|---|");
    for (what, bare, ours) in [
        ("publish (acked)", bare_publish, runtime_publish),
        ("consume", bare_consume, runtime_consume),
    ] {
        println!(
            "| {what} | {:.0} rec/s | {:.0} rec/s | {:.2} |",
            rate(bare),
            rate(ours),
            rate(ours) / rate(bare)
        );
    }
    println!();
    println!(
        "| End-to-end latency, send to handler ({latency_records} records at 500/s) | p50 | p95 | p99 | max |"
    );
    println!("|---|---|---|---|---|");
    for (what, q) in [("bare rdkafka", bare_latency), ("hixbus runtime", latency)] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            q[0], q[1], q[2], q[3]
        );
    }
}

/// Times both sides of one round, the bare side first in even rounds and second in odd ones.
async fn take_turns<B, BF, O, OF>(round: usize, bare: B, ours: O) -> (Duration, Duration)
where
    B: FnOnce() -> BF,
    BF: Future<Output = Duration>,
    O: FnOnce() -> OF,
    OF: Future<Output = Duration>,
{
    if round.is_multiple_of(2) {
        let bare = bare().await;
        (bare, ours().await)
    } else {
        let ours = ours().await;
        (bare().await, ours)
    }
}

/// Publishes `events` with bare rdkafka: the pre-encoded payload, keyed as the runtime keys it.
async fn bare_publish_all(
    producer: &FutureProducer,
    payload: &[u8],
    events: &[PrescriptionIssued],
) {
    futures::stream::iter(events)
        .map(|e| async move {
            let record = FutureRecord::to(BARE_TOPIC)
                .key(e.envelope.patient_ref.as_bytes())
                .payload(payload);
            producer
                .send(record, Timeout::Never)
                .await
                .map(drop)
                .map_err(|(e, _)| e)
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.unwrap() })
        .await;
}

/// Publishes `events` through the runtime.
async fn runtime_publish_all(publisher: &Publisher, events: &[PrescriptionIssued]) {
    futures::stream::iter(events)
        .map(|e| publisher.publish(e))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
}

/// Reads all `records` of the bare topic with a plain consumer in a new group; the time from
/// the first record to the last.
async fn bare_consume_all(kafka: &KafkaConfig, round: usize, records: usize) -> Duration {
    let consumer: StreamConsumer = kafka
        .to_rdkafka(Role::GroupConsumer)
        .set("group.id", format!("bench-bare-{round}"))
        .create()
        .unwrap();
    consumer.subscribe(&[BARE_TOPIC]).unwrap();
    let first = consumer.recv().await.unwrap();
    let started = Instant::now();
    consumer.store_offset_from_message(&first).unwrap();
    let mut bytes = first.payload().map_or(0, <[u8]>::len);
    for _ in 1..records {
        let m = consumer.recv().await.unwrap();
        bytes += m.payload().map_or(0, <[u8]>::len);
        consumer.store_offset_from_message(&m).unwrap();
    }
    assert!(bytes > 0);
    started.elapsed()
}

/// Reads all `records` of the runtime's topic with the runtime's consumer in a new group; the
/// time from the first record handled to the last.
async fn runtime_consume_all(
    kafka: &KafkaConfig,
    codec: &Arc<Codec>,
    round: usize,
    records: usize,
) -> Duration {
    let count = Arc::new(AtomicU64::new(0));
    let span: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let done = Arc::new(Notify::new());
    let consumer = Consumer::builder(kafka, codec.clone(), format!("bench-runtime-{round}"))
        .on({
            let (count, span, done) = (count.clone(), span.clone(), done.clone());
            move |e: PrescriptionIssued, _ctx: EventContext| {
                let (count, span, done) = (count.clone(), span.clone(), done.clone());
                async move {
                    let now = Instant::now();
                    span.lock().unwrap().0.get_or_insert(now);
                    assert!(!e.lines.is_empty());
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == records as u64 {
                        span.lock().unwrap().1 = Some(now);
                        done.notify_one();
                    }
                    Ok(())
                }
            }
        })
        .unwrap()
        .build()
        .unwrap();
    run_until(consumer, &done).await;
    let (first, last) = *span.lock().unwrap();
    last.unwrap().duration_since(first.unwrap())
}

async fn timed<F, Fut>(f: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    f().await;
    started.elapsed()
}

/// Publishes `count` events, one every `every`, and measures publish-call-to-handler time.
async fn latency(
    kafka: &KafkaConfig,
    codec: &Arc<Codec>,
    publisher: &Publisher,
    count: usize,
    every: Duration,
) -> [f64; 4] {
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let consumer = Consumer::builder(kafka, codec.clone(), "bench-latency")
        .on({
            let (sent_at, seen, done) = (sent_at.clone(), seen.clone(), done.clone());
            move |e: hixbus_contracts::LabResultReported, _ctx: EventContext| {
                let (sent_at, seen, done) = (sent_at.clone(), seen.clone(), done.clone());
                async move {
                    let now = Instant::now();
                    if let Some(at) = sent_at.lock().unwrap().get(&e.envelope.event_id) {
                        let mut seen = seen.lock().unwrap();
                        seen.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                        if seen.len() == count {
                            done.notify_one();
                        }
                    }
                    Ok(())
                }
            }
        })
        .unwrap()
        .build()
        .unwrap();
    let publishing = {
        let publisher = publisher.clone();
        let sent_at = sent_at.clone();
        async move {
            // Let the group settle before the clock matters.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut ticker = tokio::time::interval(every);
            let mut in_flight = Vec::new();
            for n in 0..count {
                ticker.tick().await;
                let e = samples::lab_result_reported(&format!("latency-{}", n % 50));
                sent_at
                    .lock()
                    .unwrap()
                    .insert(e.envelope.event_id.clone(), Instant::now());
                let publisher = publisher.clone();
                in_flight.push(tokio::spawn(async move {
                    publisher.publish(&e).await.map(drop)
                }));
            }
            for task in in_flight {
                task.await.unwrap().unwrap();
            }
        }
    };
    tokio::join!(run_until(consumer, &done), publishing);
    let samples = seen.lock().unwrap().clone();
    percentiles(samples)
}

/// The same measurement with bare rdkafka: send-to-receive time of the same payload.
async fn bare_latency(
    kafka: &KafkaConfig,
    producer: &FutureProducer,
    payload: &[u8],
    count: usize,
    every: Duration,
) -> [f64; 4] {
    let consumer: StreamConsumer = kafka
        .to_rdkafka(Role::GroupConsumer)
        .set("group.id", "bench-bare-latency")
        .set("auto.offset.reset", "latest")
        .create()
        .unwrap();
    consumer.subscribe(&[BARE_TOPIC]).unwrap();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let receiving = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(count);
            while seen.len() < count {
                let m = consumer.recv().await.unwrap();
                let now = Instant::now();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                if let Some(at) = sent_at.lock().unwrap().get(&key) {
                    seen.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                }
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ticker = tokio::time::interval(every);
    let mut in_flight = Vec::new();
    for n in 0..count {
        ticker.tick().await;
        let key = format!("latency-{n}");
        sent_at.lock().unwrap().insert(key.clone(), Instant::now());
        let producer = producer.clone();
        let payload = payload.to_vec();
        in_flight.push(tokio::spawn(async move {
            let record = FutureRecord::to(BARE_TOPIC).key(&key).payload(&payload);
            producer
                .send(record, Timeout::Never)
                .await
                .map(drop)
                .map_err(|(e, _)| e)
        }));
    }
    for task in in_flight {
        task.await.unwrap().unwrap();
    }
    percentiles(receiving.await.unwrap())
}

/// Runs `consumer` until `done` is notified, then shuts it down gracefully.
async fn run_until(consumer: Consumer, done: &Notify) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    done.notified().await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// p50, p95, p99 and max.
fn percentiles(mut samples: Vec<f64>) -> [f64; 4] {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    [at(0.50), at(0.95), at(0.99), *samples.last().unwrap()]
}

/// The broker to measure on, and the Tansu process if this run started one.
fn broker() -> (String, Option<KillOnDrop>) {
    if let Ok(servers) = std::env::var("HIXBUS_BENCH_BOOTSTRAP_SERVERS") {
        return (servers, None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let bin = format!("{}/.cargo/bin/tansu", std::env::var("HOME").unwrap());
    let child = Command::new(bin)
        .args(["broker", "--listener-url", &listener])
        .args(["--advertised-listener-url", &listener])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Tansu (infra/broker/tansu.sh install)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "Tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (format!("127.0.0.1:{port}"), Some(KillOnDrop(child)))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
