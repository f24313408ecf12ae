//! A log line must not vanish because something asked "is this enabled?" just before it.
//!
//! rdkafka asks `enabled!(target: "librdkafka", INFO)` each time it creates a client; with the
//! default filter (`librdkafka=warn`) the log layer refuses that query while the tracing layer
//! accepts it, and tracing-subscriber used to carry the refusal over to the next event on the
//! thread (tokio-rs/tracing#2519): medication-safety's "state rebuilt from the topics" line was
//! never printed. Its own test binary, because callsite interest is cached per process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn an_event_after_a_query_the_log_filter_refused_is_still_logged() {
    let log = Captured::default();
    // JSON lines: the fields can be matched without the terminal's colours in between.
    let _telemetry = hixbus_service::telemetry::init_logging_to(
        "log-test",
        "info,sqlx=warn,tower_http=info,librdkafka=warn",
        true,
        log.clone(),
    );
    for round in 0..3 {
        tracing::info!(round, "before the query");
        // What rdkafka's ClientConfig::create asks: the tracing layer says yes, the log says no.
        let _ = tracing::enabled!(target: "librdkafka", tracing::Level::INFO);
        tracing::info!(round, "right after the query");
        tracing::warn!(target: "librdkafka", round, "a librdkafka warning");
        tracing::info!(target: "librdkafka", round, "a librdkafka info line");
    }
    let text = log.text();
    for round in 0..3 {
        for line in [
            "before the query",
            "right after the query",
            "a librdkafka warning",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains(line) && l.contains(&format!("\"round\":{round}"))),
                "{line:?} (round {round}) missing from the log:\n{text}"
            );
        }
    }
    assert!(
        !text.contains("a librdkafka info line"),
        "the filter's librdkafka=warn was not applied:\n{text}"
    );
}
