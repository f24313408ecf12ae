//! The runtime's metrics. Logging, tracing and their export are set up once per process by
//! `hixbus_service::telemetry::init`; the instruments here read the global meter it installs.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// Bucket bounds for every duration hixbus records, in seconds: a millisecond to a minute, so
/// both a 5 ms handler and a flow held up for seconds land in a bucket that tells them apart.
pub const SECONDS_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The runtime's metrics, with stable names and labels (`topic`, `event_type`, `group`,
/// `client`, `partition`, `cause_kind`, `kind`). Created on first use from the global meter, so
/// after `hixbus_service::telemetry::init`. docs/operations.md lists them as Prometheus sees them.
#[derive(Debug)]
pub struct BusMetrics {
    pub published: Counter<u64>,
    pub publish_failures: Counter<u64>,
    /// Send to the broker's acknowledgement.
    pub publish_duration: Histogram<f64>,
    pub consumed: Counter<u64>,
    pub dead_lettered: Counter<u64>,
    pub handler_retries: Counter<u64>,
    /// Failed attempts by kind: those retried (`transient`, `not_yet`) and those dead-lettered.
    pub handler_errors: Counter<u64>,
    pub handler_duration: Histogram<f64>,
    /// From the record's timestamp (when its producer sent it) to its handler succeeding: the
    /// flow latencies, e.g. a prescription accepted by the gateway until it is in the pharmacy's
    /// inbox (`group` hixbus-pharmacy, `event_type` PrescriptionIssued).
    pub delivery_latency: Histogram<f64>,
    pub consumer_lag: Gauge<i64>,
    pub client_queued_messages: Gauge<i64>,
}

static METRICS: LazyLock<BusMetrics> = LazyLock::new(|| {
    let meter: Meter = opentelemetry::global::meter("hixbus.bus");
    BusMetrics {
        published: meter
            .u64_counter("hixbus.bus.published")
            .with_description("Records the broker acknowledged")
            .build(),
        publish_failures: meter
            .u64_counter("hixbus.bus.publish_failures")
            .with_description("Publishes that returned an error to the caller")
            .build(),
        publish_duration: meter
            .f64_histogram("hixbus.bus.publish.duration")
            .with_description("From sending a record to the broker's acknowledgement")
            .with_unit("s")
            .with_boundaries(SECONDS_BUCKETS.to_vec())
            .build(),
        consumed: meter
            .u64_counter("hixbus.bus.consumed")
            .with_description("Records handled successfully (offset stored)")
            .build(),
        dead_lettered: meter
            .u64_counter("hixbus.bus.dead_lettered")
            .with_description("Records sent to a dead-letter topic")
            .build(),
        handler_retries: meter
            .u64_counter("hixbus.bus.handler_retries")
            .with_description("Transient failures retried with backoff")
            .build(),
        handler_errors: meter
            .u64_counter("hixbus.bus.handler_errors")
            .with_description("Failed attempts at handling a record, by kind")
            .build(),
        handler_duration: meter
            .f64_histogram("hixbus.bus.handler_duration")
            .with_description("Time in the handler, per record")
            .with_unit("s")
            .with_boundaries(SECONDS_BUCKETS.to_vec())
            .build(),
        delivery_latency: meter
            .f64_histogram("hixbus.bus.delivery_latency")
            .with_description("From the record's producer sending it to its handler succeeding")
            .with_unit("s")
            .with_boundaries(SECONDS_BUCKETS.to_vec())
            .build(),
        consumer_lag: meter
            .i64_gauge("hixbus.kafka.consumer_lag")
            .with_description("Records between the group's committed offset and the partition's end, per partition")
            .with_unit("{record}")
            .build(),
        client_queued_messages: meter
            .i64_gauge("hixbus.kafka.queued_messages")
            .with_description("Messages in librdkafka's queues")
            .with_unit("{message}")
            .build(),
    }
});

pub fn metrics() -> &'static BusMetrics {
    &METRICS
}

/// Every failure series a group can have starts at zero, as Prometheus advises: `increase()` and
/// `rate()` need a sample before the first failure to see it, and a dashboard or an alert on a
/// series that does not exist yet shows nothing rather than "none".
pub(crate) fn zero_failure_series(group: &str, topics: &[&str]) {
    let m = metrics();
    let group = KeyValue::new("group", group.to_owned());
    m.handler_retries.add(0, std::slice::from_ref(&group));
    let kinds = crate::dlq::CauseKind::ALL
        .iter()
        .map(|kind| kind.as_str())
        .chain(["transient", "not_yet"]);
    for kind in kinds {
        m.handler_errors
            .add(0, &[group.clone(), KeyValue::new("kind", kind)]);
    }
    for topic in topics {
        for kind in crate::dlq::CauseKind::ALL {
            m.dead_lettered.add(
                0,
                &[
                    group.clone(),
                    KeyValue::new("topic", (*topic).to_owned()),
                    KeyValue::new("cause_kind", kind.as_str()),
                ],
            );
        }
    }
}
