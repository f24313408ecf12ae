//! What every request leaves behind: a server span for its trace, and the HTTP metrics.

use axum::http::{HeaderMap, header};
use opentelemetry::KeyValue;
use std::sync::OnceLock;
use tracing::Instrument as _;

/// Reads a caller's `traceparent`/`tracestate` from the request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The HTTP instruments (OpenTelemetry's semantic conventions for HTTP servers).
struct HttpMetrics {
    duration: opentelemetry::metrics::Histogram<f64>,
    live_streams: opentelemetry::metrics::UpDownCounter<i64>,
}

fn http_metrics() -> &'static HttpMetrics {
    static METRICS: OnceLock<HttpMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("hixbus.service");
        HttpMetrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Time to the response's head, by route and status; a live stream counts until it opens")
                .with_unit("s")
                .with_boundaries(hixbus_bus::telemetry::SECONDS_BUCKETS.to_vec())
                .build(),
            live_streams: meter
                .i64_up_down_counter("hixbus.http.live_streams")
                .with_description("Live streams (server-sent events) open now, by route")
                .with_unit("{stream}")
                .build(),
        }
    })
}

/// Middleware on every service's router. Each request gets a server span (the root of the
/// trace its events carry across Kafka, or a child of the caller's `traceparent`), and is
/// measured by route template (never the path itself, which can hold an id) and status; live
/// streams are counted while open.
pub async fn observe(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "http.server",
        otel.kind = "server",
        otel.name = %format!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(request.headers()))
    });
    if opentelemetry::trace::TraceContextExt::span(&parent)
        .span_context()
        .is_valid()
    {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let metrics = http_metrics();
    metrics.duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route.clone()),
            KeyValue::new(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            ),
        ],
    );
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        return response;
    }
    let open = OpenStream::new(route);
    response.map(|body| {
        axum::body::Body::from_stream(futures::StreamExt::map(
            body.into_data_stream(),
            move |chunk| {
                let _open = &open;
                chunk
            },
        ))
    })
}

/// The method as a label: the standard ones by name, any other `_OTHER` (OpenTelemetry's rule).
/// A client chooses the method, and each new label value would be a new series kept for the
/// life of the process.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Counts a live stream as open from its response until its body is dropped (the client
/// went, or the service stops).
struct OpenStream(KeyValue);

impl OpenStream {
    fn new(route: String) -> Self {
        let route = KeyValue::new("http.route", route);
        http_metrics()
            .live_streams
            .add(1, std::slice::from_ref(&route));
        Self(route)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        http_metrics()
            .live_streams
            .add(-1, std::slice::from_ref(&self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_a_client_made_up_does_not_become_a_label() {
        assert_eq!(method_label(&axum::http::Method::POST), "POST");
        let made_up = axum::http::Method::from_bytes(b"FROBNICATE-12345").unwrap();
        assert_eq!(method_label(&made_up), "_OTHER");
    }
}
