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
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, span};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
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
    let filter = std::env::var("HIXBUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info,librdkafka=warn".to_owned());
    let json = std::env::var("HIXBUS_LOG_FORMAT").is_ok_and(|f| f == "json");
    init_logging_to(service_name, &filter, json, std::io::stderr)
}

/// [`init`] with the log filter, format and destination given rather than read from the
/// environment: what a test needs to read the log an operator would see.
pub fn init_logging_to<W>(service_name: &str, filter: &str, json: bool, writer: W) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
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

    // The log filter applies to log output only: spans must exist for tracing even when logs
    // are quiet, or trace context would stop crossing Kafka whenever someone sets
    // HIXBUS_LOG=warn.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(AskedAtEveryCall(LevelFilter::INFO));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if json {
        fmt.json()
            .with_filter(AskedAtEveryCall(EnvFilter::new(filter)))
            .boxed()
    } else {
        fmt.with_filter(AskedAtEveryCall(EnvFilter::new(filter)))
            .boxed()
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

/// A filter that every span and event consults when it happens, instead of the callsite's
/// cached interest.
///
/// With one filter per layer, tracing-subscriber keeps each filter's last verdict in a
/// thread-local until the span or event it was asked about arrives. A bare "is this enabled?"
/// query — rdkafka asks `enabled!(target: "librdkafka", INFO)` each time it creates a client —
/// leaves verdicts behind that no event consumes; the next event on that thread whose callsite
/// is cached as "always" skips the filtering pass and inherits them, so a layer whose filter
/// refused the query silently drops it (tokio-rs/tracing#2519: with the default filter, startup
/// lines such as "state rebuilt from the topics" vanished). A callsite that is only "sometimes"
/// interesting is filtered afresh at every call, which overwrites any stale verdict; the price
/// is one filter evaluation per enabled span or event. Callsites the filter never enables stay
/// cached as such, so disabled levels cost what they did.
struct AskedAtEveryCall<F>(F);

impl<S, F: Filter<S>> Filter<S> for AskedAtEveryCall<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx);
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx);
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx);
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
