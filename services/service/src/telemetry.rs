//! Tracing and OpenTelemetry, set up once per process.
//!
//! Logs go to stderr (`HIXBUS_LOG` or `RUST_LOG` filter, `HIXBUS_LOG_FORMAT=json` for shippers).
//! Spans always carry OpenTelemetry trace ids, so trace context crosses Kafka even when nothing
//! is exported. Export is opt-in with the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (OTLP over HTTP/protobuf) turns on trace and metric export, tagged with `service.name`.
//! Metrics are also always served for scraping (`/metrics`, [`crate::metrics`]).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporters alive; dropping it (or [`Telemetry::shutdown`]) flushes them.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes spans and metrics still buffered for export.
    pub fn shutdown(self) {
        let _ = self.tracer_provider.shutdown();
        if let Some(meters) = self.meter_provider {
            let _ = meters.shutdown();
        }
    }
}

/// Installs logging, the tracer and the meter for `service_name`. A second call in the same
/// process (tests) keeps the first subscriber.
pub fn init(service_name: &str) -> Telemetry {
    let export = otlp_configured();
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();

    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    // Metrics are always recorded, for `/metrics`; OTLP export adds a second reader.
    let mut meters = SdkMeterProvider::builder().with_resource(resource);
    let pull = crate::metrics::install();
    if let Some(reader) = pull.clone() {
        meters = meters.with_reader(reader);
    }
    if export {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => tracer_builder = tracer_builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("warning: OTLP trace export disabled: {e}"),
        }
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => meters = meters.with_periodic_exporter(exporter),
            Err(e) => eprintln!("warning: OTLP metric export disabled: {e}"),
        }
    }
    // Only the first call in a process installs a provider: a second would replace the
    // one `/metrics` reads.
    let meter_provider = pull.map(|_| {
        let provider = meters.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        provider
    });
    let tracer_provider = tracer_builder.build();
    let tracer = tracer_provider.tracer("hixbus");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    let filter = std::env::var("HIXBUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info,librdkafka=warn".to_owned());
    let json = std::env::var("HIXBUS_LOG_FORMAT").is_ok_and(|f| f == "json");
    // The log filter applies to log output only: spans must exist for tracing even when logs
    // are quiet, or trace context would stop crossing Kafka whenever someone sets
    // HIXBUS_LOG=warn.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(EnvFilter::new(filter)).boxed()
    } else {
        fmt.with_filter(EnvFilter::new(filter)).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init();
    Telemetry {
        tracer_provider,
        meter_provider,
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}
