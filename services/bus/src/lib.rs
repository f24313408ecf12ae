//! The hixbus bus runtime: every service publishes and consumes through this crate, so delivery
//! guarantees, dead letters, tracing and metrics are solved once.
//!
//! - [`Publisher`]: typed events in, broker-acknowledged [`Delivery`] out (idempotent producer,
//!   `acks=all`, key = patient reference, event headers and W3C trace context).
//! - [`Consumer`]: a consumer-group runner that decodes, continues the trace, calls the handler
//!   for the event type, and stores the offset only after the handler succeeded. Transient
//!   failures retry with backoff; records that can never succeed go to `<topic>.dlq`.
//! - [`Idempotency`]: exactly-once effects on top of at-least-once delivery, keyed by event id,
//!   in the same database transaction as the effect. No broker transactions needed.
//! - [`topics`]: the catalog's topics as code; [`reader`]: read a topic for `tail` and the DLQ
//!   tools; [`dev`]: the in-memory broker of `hixbus up`; [`telemetry`]: tracing and OpenTelemetry.

pub mod config;
pub mod consumer;
pub mod context;
pub mod dev;
pub mod dlq;
pub mod headers;
pub mod http;
pub mod idempotency;
mod member;
pub mod publisher;
pub mod reader;
pub mod shutdown;
pub mod telemetry;
pub mod topics;
pub mod trace;

pub use config::KafkaConfig;
pub use consumer::{
    Consumer, ConsumerBuilder, EventContext, HandlerError, RetryPolicy, RunSummary,
};
pub use idempotency::{Claim, Idempotency};
pub use publisher::{Delivery, PublishError, Publisher};

/// The dead-letter topic for `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}{}", dlq::SUFFIX)
}
