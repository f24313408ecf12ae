//! What the latency benches share: the broker they run on and how they summarize.

use hixbus_bus::dev::DevCluster;

use crate::{Backend, BusStack, Engine, TestBroker, TestRegistry, init_tracing};

/// The insurers whose own topics a bench's mock cluster has.
pub const INSURERS: [&str; 2] = ["insurer-kenpo", "insurer-kokuho"];

/// The broker and registry of a bench run: Tansu, or librdkafka's in-memory mock cluster (the
/// broker of `hixbus up`) with `HIXBUS_BENCH_BROKER=mock`, kept alive by the second value.
pub async fn stack() -> (BusStack, Option<DevCluster>) {
    stack_or("memory").await
}

/// [`stack`] on the broker `HIXBUS_BENCH_BROKER` names, else on `default`: `mock`, `memory` or
/// `sqlite` (Tansu's engines). Tansu 0.6.0's memory engine answers a fetch from inside a
/// producer's batch without the rest of that batch (a consumer that pauses and resumes loses
/// records); its SQLite engine is exact but slow to read a large backlog; the mock keeps only the
/// last 5 MB of each partition.
pub async fn stack_or(default: &str) -> (BusStack, Option<DevCluster>) {
    let chosen = std::env::var("HIXBUS_BENCH_BROKER")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned());
    let engine = match chosen.as_str() {
        "mock" => None,
        "memory" => Some(Engine::Memory),
        "sqlite" => Some(Engine::Sqlite),
        other => panic!("HIXBUS_BENCH_BROKER={other}: expected mock, memory or sqlite"),
    };
    if let Some(engine) = engine {
        // The memory engine is the tests' own broker: an external cluster or Kafka in Docker, if
        // the environment names one, stands in for it as it does in the tests.
        let broker = match engine {
            Engine::Memory => TestBroker::start(),
            Engine::Sqlite => TestBroker::tansu(engine),
        };
        let registry = TestRegistry::fresh(Backend::Sqlite).await;
        return (BusStack::on(broker, registry).await, None);
    }
    init_tracing();
    // The mock cannot create topics through the admin API: they are made with the cluster.
    let mut specs = hixbus_bus::topics::specs(
        hixbus_bus::topics::EMBEDDED,
        hixbus_contracts::Catalog::embedded(),
    )
    .expect("topics file");
    specs.extend(
        hixbus_bus::topics::insurer_specs(hixbus_bus::topics::EMBEDDED, INSURERS)
            .expect("topics file"),
    );
    let cluster = DevCluster::start(None, &specs).await.expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let stack = BusStack {
        kafka: hixbus_bus::KafkaConfig::new(&bootstrap).with_client_id("hixbus-bench"),
        broker: TestBroker::external(bootstrap),
        registry: TestRegistry::fresh(Backend::Sqlite).await,
    };
    (stack, Some(cluster))
}

/// The broker's name for the report.
pub fn broker_name(stack: &BusStack, mock: &Option<DevCluster>) -> String {
    if mock.is_some() {
        "librdkafka mock cluster (in memory, in this process)".to_owned()
    } else {
        stack.broker.describe()
    }
}

/// p50, p95, p99 and max of `samples` (NaN when there are none).
pub fn percentiles(mut samples: Vec<f64>) -> [f64; 4] {
    if samples.is_empty() {
        return [f64::NAN; 4];
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    [at(0.50), at(0.95), at(0.99), samples[samples.len() - 1]]
}

/// The load of a run: `rate` per second for `seconds` (`HIXBUS_BENCH_RATE`,
/// `HIXBUS_BENCH_SECONDS`). Without `--bench` (`cargo test` runs each bench once, to keep it
/// working) the run is a short smoke run whose numbers mean nothing, and says so.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rate: u64,
    pub seconds: u64,
    pub smoke: bool,
}

impl Load {
    /// The load from the environment, `(rate, seconds)` of a measured run by default and
    /// `smoke` of a smoke run.
    pub fn from_env(measured: (u64, u64), smoke: (u64, u64)) -> Self {
        let is_smoke = !std::env::args().any(|a| a == "--bench");
        let (rate, seconds) = if is_smoke { smoke } else { measured };
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        if is_smoke {
            println!("smoke run (no --bench): the numbers below mean nothing");
        }
        Self {
            rate: env("HIXBUS_BENCH_RATE", rate),
            seconds: env("HIXBUS_BENCH_SECONDS", seconds),
            smoke: is_smoke,
        }
    }

    pub fn total(&self) -> usize {
        (self.rate * self.seconds) as usize
    }

    /// The pause between two offers at this rate.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.rate as f64)
    }
}

/// When each item (by id) was sent, or seen somewhere.
pub type Times =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>;

/// Waits until every item in `sent` has arrived in `arrivals`, for at most `limit`.
pub async fn wait_for_all(sent: &Times, arrivals: &Times, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let done = {
            let (sent, arrivals) = (sent.lock().unwrap(), arrivals.lock().unwrap());
            sent.keys().all(|id| arrivals.contains_key(id))
        };
        if done {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Milliseconds from each item's sending to its arrival, and how many never arrived.
pub fn lags(sent: &Times, arrivals: &Times) -> (Vec<f64>, usize) {
    let (sent, arrivals) = (sent.lock().unwrap(), arrivals.lock().unwrap());
    let mut samples = Vec::new();
    let mut missing = 0;
    for (id, at) in sent.iter() {
        match arrivals.get(id) {
            Some(seen) => samples.push(seen.saturating_duration_since(*at).as_secs_f64() * 1e3),
            None => missing += 1,
        }
    }
    (samples, missing)
}

/// Prints a Markdown table of percentiles (p50, p95, p99, max), one row per measurement.
pub fn table(first_column: &str, rows: &[(&str, [f64; 4])]) {
    println!("| {first_column} | p50 | p95 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (what, q) in rows {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            q[0], q[1], q[2], q[3]
        );
    }
}

/// The benches' baseline: a bare hixbus consumer of `E`'s topic in a group of its own (decode,
/// nothing else), noting when each event, by `key`, first arrives. It runs until `stop`.
pub fn first_seen<E: hixbus_contracts::EventRecord>(
    stack: &BusStack,
    key: fn(E) -> String,
    stop: &hixbus_service::CancellationToken,
) -> (Times, tokio::task::JoinHandle<()>) {
    let seen: Times = Times::default();
    let consumer = hixbus_bus::Consumer::builder(&stack.kafka, stack.codec(), "bench-baseline")
        .with_state(seen.clone())
        .on(move |seen: Times, e: E, _| async move {
            seen.lock()
                .unwrap()
                .entry(key(e))
                .or_insert_with(std::time::Instant::now);
            Ok::<(), hixbus_bus::HandlerError>(())
        })
        .expect("the event is in the catalog")
        .build()
        .expect("the baseline consumer");
    let stop = stop.clone();
    let task = tokio::spawn(async move {
        let _ = consumer.run(stop.cancelled_owned()).await;
    });
    (seen, task)
}
