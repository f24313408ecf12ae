//! A Confluent-compatible schema registry for Avro, stored in PostgreSQL or SQLite.
//!
//! It speaks Confluent's REST API closely enough that Confluent's own serializers, and any
//! client written against Confluent's documentation, work against it unchanged: same resources,
//! same JSON shapes, same error codes. Compatibility is decided by Avro's schema-resolution rules
//! (apache-avro), never by comparing text.

pub mod auth;
pub mod compat;
pub mod config;
pub mod domain;
pub mod error;
mod routes;
pub mod service;
pub mod startup;
pub mod store;

pub use config::RegistryConfig;
pub use startup::RegistryServer;
