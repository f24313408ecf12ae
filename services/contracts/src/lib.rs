//! hixbus event contracts: the catalog of Avro schemas in `schemas/`, a typed Rust struct per
//! event, and the codec that puts them on the wire in the Confluent format any Kafka client with
//! a schema registry can read.

pub mod catalog;
pub mod codec;
pub mod critical;
pub mod docs;
pub mod events;
pub mod gate;
pub mod identity;
pub mod lifecycle;
pub mod samples;
pub mod systems;
pub mod time;
pub mod wire;

pub use catalog::{
    Catalog, CatalogEntry, CatalogError, insurer_prefix, insurer_topic, research_prefix,
    research_topic,
};
pub use codec::{
    Codec, DataError, Decoded, EncodeError, Encoded, SchemaIdStrategy, TransientError, decode_body,
    encode_body,
};
pub use events::*;
pub use hixbus_registry_client as registry;
pub use time::{Date, Timestamp};
