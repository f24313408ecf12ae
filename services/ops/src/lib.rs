//! The operator's API, behind the operator console: what the bus is doing (topics, throughput,
//! consumer-group lag), what it could not do (dead letters with their cause), putting a dead
//! letter back once its cause is fixed, the registry's subjects and the services' health.
//!
//! A service of its own, not pages reading Kafka from the web console: the consoles keep no
//! data and hold no Kafka principal, and the operator's reads of dead letters — which carry
//! patient data — are audited here like every other service's reads (docs/operations.md).

pub mod config;
pub mod redrives;
pub mod routes;
pub mod startup;
pub mod watch;

pub use config::Config;
pub use startup::{NAME, build};

/// The ops tables (versions 11000–11999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
