//! What the latency benches share: the broker they run on and how they summarize.

use hixbus_bus::dev::DevCluster;

use crate::{Backend, BusStack, TestBroker, TestRegistry, init_tracing};

/// The broker and registry of a bench run: Tansu, or librdkafka's in-memory mock cluster (the
/// broker of `hixbus up`) with `HIXBUS_BENCH_BROKER=mock`, kept alive by the second value.
pub async fn stack() -> (BusStack, Option<DevCluster>) {
    if std::env::var("HIXBUS_BENCH_BROKER").as_deref() != Ok("mock") {
        return (BusStack::start().await, None);
    }
    init_tracing();
    // The mock cannot create topics through the admin API: they are made with the cluster.
    let specs = hixbus_bus::topics::specs(
        hixbus_bus::topics::EMBEDDED,
        hixbus_contracts::Catalog::embedded(),
    )
    .expect("topics file");
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
pub fn broker_name(mock: &Option<DevCluster>) -> &'static str {
    if mock.is_some() {
        "librdkafka mock cluster (in memory, in this process)"
    } else {
        "Tansu (memory engine)"
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
