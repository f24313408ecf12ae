//! The hixbus bus runtime: every service publishes and consumes through this crate, so delivery
//! guarantees, dead letters, tracing and metrics are solved once.
//!
//! - [`Publisher`]: typed events in, broker-acknowledged [`Delivery`] out (idempotent producer,
//!   `acks=all`, key = patient reference, event headers and W3C trace context).
//! - [`Consumer`]: a consumer-group runner that decodes, continues the trace, calls the handler
//!   for the event type, and stores the offset only after the handler succeeded. Transient
//!   failures retry with backoff; records that can never succeed go to `<topic>.dlq`.
//! - [`topics`]: the catalog's topics as code; [`reader`]: read a topic for `tail` and the DLQ
//!   tools; [`dev`]: the in-memory broker of `hixbus up`; [`telemetry`]: its metrics.

pub mod config;
pub mod consumer;
pub mod context;
pub mod dev;
pub mod dlq;
pub mod headers;
mod member;
pub mod publisher;
pub mod reader;
pub mod telemetry;
pub mod topics;
pub mod trace;

pub use config::KafkaConfig;
pub use consumer::{
    Consumer, ConsumerBuilder, EventContext, HandlerError, RetryPolicy, RunSummary, StatefulBuilder,
};
pub use publisher::{Delivery, PublishError, Publisher};

/// The dead-letter topic for `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}{}", dlq::SUFFIX)
}
