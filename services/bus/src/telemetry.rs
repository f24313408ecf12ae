//! The runtime's metrics. Logging, tracing and their export are set up once per process by
//! `hixbus_service::telemetry::init`; the instruments here read the global meter it installs.

use std::sync::LazyLock;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// The runtime's metrics, with stable names and labels (`topic`, `event_type`, `group`,
/// `client`). Created on first use from the global meter, so after `hixbus_service::telemetry::init`.
#[derive(Debug)]
pub struct BusMetrics {
    pub published: Counter<u64>,
    pub publish_failures: Counter<u64>,
    pub consumed: Counter<u64>,
    pub dead_lettered: Counter<u64>,
    pub handler_retries: Counter<u64>,
    pub handler_duration: Histogram<f64>,
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
        handler_duration: meter
            .f64_histogram("hixbus.bus.handler_duration")
            .with_unit("s")
            .build(),
        consumer_lag: meter
            .i64_gauge("hixbus.kafka.consumer_lag")
            .with_description("Records behind the high watermark, summed over partitions")
            .build(),
        client_queued_messages: meter
            .i64_gauge("hixbus.kafka.queued_messages")
            .with_description("Messages in librdkafka's queues")
            .build(),
    }
});

pub fn metrics() -> &'static BusMetrics {
    &METRICS
}
