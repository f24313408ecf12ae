//! W3C trace context across Kafka: the publisher injects the current span's context into the
//! record headers, the consumer extracts it and parents its span on it, so one trace follows an
//! event from the clinic to the pharmacy however many services it crosses.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::headers::{self, HeaderList};

struct Inject<'a>(&'a mut HeaderList);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        headers::set(self.0, key, value);
    }
}

struct Extract<'a>(&'a HeaderList);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        headers::get(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Writes `span`'s context as `traceparent`/`tracestate` headers (nothing when tracing is off).
pub fn inject(span: &tracing::Span, list: &mut HeaderList) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut Inject(list))
    });
}

/// The producer's span context in `list`'s headers, if it sent a valid one.
fn producer(list: &HeaderList) -> Option<opentelemetry::Context> {
    let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(list)));
    context.span().span_context().is_valid().then_some(context)
}

/// Makes the trace in `list`'s headers the parent of `span`.
pub fn continue_trace(span: &tracing::Span, list: &HeaderList) {
    if let Some(parent) = producer(list) {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the trace in `list`'s headers: a span that handles a run of records has as
/// many producers as records, so it links to each instead of taking one as its parent.
pub fn link_trace(span: &tracing::Span, list: &HeaderList) {
    if let Some(producer) = producer(list) {
        span.add_link(producer.span().span_context().clone());
    }
}

/// The trace id `span` belongs to, as 32 hex digits, if tracing is on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
