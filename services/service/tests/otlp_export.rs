//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans leave the process over OTLP/HTTP, tagged with
//! the service name.
//!
//! Telemetry reads the environment once per process, and the workspace forbids the `unsafe`
//! that `std::env::set_var` needs, so this test (harness = false) re-runs itself as a child
//! process with the endpoint in its environment, as an operator would start a service.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// A one-request-at-a-time OTLP collector: reports each request's path and body.
fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            // Read the head, then as many body bytes as Content-Length says.
            let (head_end, length) = loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break (request.len(), 0);
                }
                request.extend_from_slice(&buf[..n]);
                if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while request.len() < head_end + length {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let head =
                String::from_utf8_lossy(&request[..head_end.min(request.len())]).into_owned();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let body = request[head_end.min(request.len())..].to_vec();
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            );
            let _ = tx.send((path, body));
        }
    });
    (url, rx)
}

fn main() {
    if std::env::var("HIXBUS_OTLP_CHILD").is_ok() {
        export_one_span();
    } else {
        spans_are_exported_over_otlp_when_an_endpoint_is_configured();
        println!("test spans_are_exported_over_otlp_when_an_endpoint_is_configured ... ok");
    }
}

fn spans_are_exported_over_otlp_when_an_endpoint_is_configured() {
    let (url, requests) = collector();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        .env("HIXBUS_OTLP_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success());
    let (path, body) = requests
        .recv_timeout(Duration::from_secs(20))
        .expect("the collector received an export");
    assert_eq!(path, "/v1/traces");
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"hixbus-otlp-test"),
        "service.name is in the export"
    );
    assert!(
        contains(b"prescription issued"),
        "the span is in the export"
    );
}

/// The child: one span, then a flush on shutdown.
fn export_one_span() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let telemetry = hixbus_service::telemetry::init("hixbus-otlp-test");
        let span = tracing::info_span!("prescription issued");
        assert!(hixbus_bus::trace::trace_id(&span).is_some());
        drop(span);
        // Shutdown flushes the batch exporter: the span is sent before the process exits.
        tokio::task::spawn_blocking(move || telemetry.shutdown())
            .await
            .unwrap();
    });
}
