//! `/metrics`: what the OpenTelemetry instruments recorded, in the OpenMetrics text format
//! Prometheus scrapes.
//!
//! The runtime records through OpenTelemetry only, so metrics pushed over OTLP and metrics
//! scraped here are the same numbers. [`install`] adds a pull reader to the process's meter
//! provider; each scrape collects from it and encodes with the Prometheus project's own client
//! (`prometheus-client`), which owns the format's details (`_total`, units, `+Inf`, `# EOF`).
//!
//! Names: the instrument's, dots made underscores, then the unit (`s` → `_seconds`, `By` →
//! `_bytes`; annotations such as `{record}` add nothing) and `_total` for counters. Attribute
//! keys likewise (`http.route` → `http_route`). The catalogue is in docs/operations.md.
//!
//! One process has one meter provider: under `hixbus up` every service's `/metrics` shows the
//! whole process; deployed (`hixbus serve NAME`) a process is one service.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The media type of the OpenMetrics text format (Prometheus asks for it first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static READER: OnceLock<PullReader> = OnceLock::new();

/// A reader the meter provider owns and `/metrics` shares: the provider takes its readers by
/// value, so both hold the same `ManualReader`.
#[derive(Debug, Clone, Default)]
pub struct PullReader(Arc<ManualReader>);

impl MetricReader for PullReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The reader for this process's meter provider: the first call makes it, later ones (a second
/// `telemetry::init` in tests) get none, as only one provider can be global.
pub(crate) fn install() -> Option<PullReader> {
    let reader = PullReader::default();
    READER.set(reader.clone()).ok().map(|()| reader)
}

/// The process's metrics in the OpenMetrics text format; only `# EOF` before [`install`].
pub fn render() -> String {
    let mut registry = Registry::default();
    if let Some(reader) = READER.get() {
        registry.register_collector(Box::new(Collector(reader.clone())));
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    text
}

/// `app` with `/metrics` and every request measured: each [`crate::run::Service`], and the
/// schema registry, which is not one.
pub fn measured(app: axum::Router) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .merge(app)
        .layer(axum::middleware::from_fn(crate::observe::observe))
}

/// `GET /metrics`.
pub async fn scrape() -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(render)
        .await
        .unwrap_or_else(|_| "# EOF\n".to_owned());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

#[derive(Debug)]
struct Collector(PullReader);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut collected = ResourceMetrics::default();
        if let Err(e) = self.0.collect(&mut collected) {
            tracing::warn!(error = %e, "cannot collect the metrics");
            return Ok(());
        }
        for scope in collected.scope_metrics() {
            for metric in scope.metrics() {
                encode_metric(metric, &mut encoder)?;
            }
        }
        Ok(())
    }
}

type Labels = Vec<(String, String)>;

fn encode_metric(metric: &Metric, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let name = prometheus_name(metric.name());
    let unit = prometheus_unit(metric.unit());
    let help = metric.description();
    match metric.data() {
        AggregatedMetrics::F64(data) => encode_data(&name, help, unit.as_ref(), data, encoder),
        AggregatedMetrics::U64(data) => encode_data(&name, help, unit.as_ref(), data, encoder),
        AggregatedMetrics::I64(data) => encode_data(&name, help, unit.as_ref(), data, encoder),
    }
}

/// The numbers the three OpenTelemetry value types have in common, as Prometheus writes them.
trait Number: Copy {
    fn as_f64(self) -> f64;
}
impl Number for f64 {
    fn as_f64(self) -> f64 {
        self
    }
}
impl Number for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}
impl Number for i64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

fn encode_data<T: Number>(
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    data: &MetricData<T>,
    encoder: &mut DescriptorEncoder<'_>,
) -> std::fmt::Result {
    match data {
        MetricData::Sum(sum) if sum.is_monotonic() => {
            let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
            for point in sum.data_points() {
                let labels = labels(point.attributes());
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&point.value().as_f64(), None)?;
            }
        }
        // An up-down counter (live streams) is a gauge to Prometheus.
        MetricData::Sum(sum) => encode_gauge(
            encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?,
            sum.data_points()
                .map(|p| (labels(p.attributes()), p.value().as_f64())),
        )?,
        MetricData::Gauge(gauge) => encode_gauge(
            encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?,
            gauge
                .data_points()
                .map(|p| (labels(p.attributes()), p.value().as_f64())),
        )?,
        MetricData::Histogram(histogram) => {
            let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?;
            for point in histogram.data_points() {
                let labels = labels(point.attributes());
                // OpenTelemetry has one more count than bounds: the last is above every bound,
                // which prometheus-client writes as `+Inf` when its bound is `f64::MAX`.
                let buckets: Vec<(f64, u64)> = point
                    .bounds()
                    .chain(std::iter::once(f64::MAX))
                    .zip(point.bucket_counts())
                    .collect();
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        point.sum().as_f64(),
                        point.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        // hixbus records no exponential histograms; a view that made one would show nothing
        // rather than something wrong.
        MetricData::ExponentialHistogram(_) => {}
    }
    Ok(())
}

fn encode_gauge(
    mut family: prometheus_client::encoding::MetricEncoder<'_>,
    points: impl Iterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    for (labels, value) in points {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// Sorted by name: OpenTelemetry keeps attributes in no fixed order, and a scrape that reads the
/// same from one run to the next is easier to compare.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Labels {
    let mut labels: Labels = attributes
        .map(|kv| (prometheus_name(kv.key.as_str()), label_value(&kv.value)))
        .collect();
    labels.sort();
    labels
}

fn label_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

/// `hixbus.bus.published` → `hixbus_bus_published`: Prometheus names are `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The UCUM units hixbus uses, as Prometheus suffixes; `{annotations}` and `1` are no unit.
fn prometheus_unit(unit: &str) -> Option<Unit> {
    match unit {
        "s" => Some(Unit::Seconds),
        "By" => Some(Unit::Bytes),
        "" | "1" => None,
        u if u.starts_with('{') => None,
        other => Some(Unit::Other(prometheus_name(other))),
    }
}

/// Connection pools `/metrics` reports on, by service: registered when a service binds.
static POOLS: Mutex<Vec<(&'static str, hixbus_storage::Database)>> = Mutex::new(Vec::new());

/// Reports `database`'s pool as `service`'s (a later registration of the same service replaces
/// it: tests start a service many times in one process).
pub(crate) fn watch_pool(service: &'static str, database: &hixbus_storage::Database) {
    static GAUGE: OnceLock<opentelemetry::metrics::ObservableGauge<i64>> = OnceLock::new();
    GAUGE.get_or_init(|| {
        opentelemetry::global::meter("hixbus.service")
            .i64_observable_gauge("hixbus.db.pool.connections")
            .with_description(
                "Database connections of the service's pool, by state (idle, used, max)",
            )
            .with_unit("{connection}")
            .with_callback(|observer| {
                let pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
                for (service, db) in pools.iter() {
                    let size = i64::from(db.pool.size());
                    let idle = db.pool.num_idle() as i64;
                    let max = i64::from(db.pool.options().get_max_connections());
                    for (state, value) in [("idle", idle), ("used", size - idle), ("max", max)] {
                        observer.observe(
                            value,
                            &[
                                KeyValue::new("service", *service),
                                KeyValue::new("state", state),
                            ],
                        );
                    }
                }
            })
            .build()
    });
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(name, _)| *name != service);
    pools.push((service, database.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_follow_prometheus_conventions() {
        assert_eq!(
            prometheus_name("hixbus.bus.handler_duration"),
            "hixbus_bus_handler_duration"
        );
        assert_eq!(prometheus_name("http.route"), "http_route");
        assert_eq!(prometheus_name("9lives"), "_9lives");
        assert!(matches!(prometheus_unit("s"), Some(Unit::Seconds)));
        assert!(prometheus_unit("{record}").is_none());
    }

    /// A provider of its own (not the process's global one), read the way `/metrics` reads.
    #[test]
    fn counters_histograms_and_gauges_are_written_in_the_openmetrics_format() {
        use opentelemetry::metrics::MeterProvider as _;
        let reader = PullReader::default();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("test");
        let counter = meter.u64_counter("hixbus.test.published").build();
        counter.add(3, &[KeyValue::new("topic", "prescriptions")]);
        let histogram = meter
            .f64_histogram("hixbus.test.duration")
            .with_unit("s")
            .with_boundaries(vec![0.01, 0.1])
            .build();
        for seconds in [0.005, 0.05, 0.05, 7.0] {
            histogram.record(
                seconds,
                &[KeyValue::new("event_type", "PrescriptionIssued")],
            );
        }
        let gauge = meter
            .i64_gauge("hixbus.test.lag")
            .with_unit("{record}")
            .build();
        gauge.record(
            42,
            &[KeyValue::new("topic", "t"), KeyValue::new("partition", 3)],
        );

        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector(reader)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        assert!(
            text.contains("# TYPE hixbus_test_published counter"),
            "{text}"
        );
        assert!(
            text.contains("hixbus_test_published_total{topic=\"prescriptions\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hixbus_test_duration_seconds histogram"),
            "{text}"
        );
        for line in [
            "hixbus_test_duration_seconds_count{event_type=\"PrescriptionIssued\"} 4",
            "hixbus_test_duration_seconds_bucket{le=\"0.01\",event_type=\"PrescriptionIssued\"} 1",
            "hixbus_test_duration_seconds_bucket{le=\"0.1\",event_type=\"PrescriptionIssued\"} 3",
            "hixbus_test_duration_seconds_bucket{le=\"+Inf\",event_type=\"PrescriptionIssued\"} 4",
            "hixbus_test_lag{partition=\"3\",topic=\"t\"} 42",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
