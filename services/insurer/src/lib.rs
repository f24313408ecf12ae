//! A reference insurer (docs/claims.md): it reads only its own topic, as an insurer on Apache
//! Kafka with its prefixed ACL would, and decides each of its members' claims as it arrives —
//! eligibility from its roster, duplicates, 突合 of dispensing claims against the prescription
//! evidence, prices and arithmetic against the tables — sending each decision back exactly once.

pub mod adjudicate;
pub mod adjudicator;
pub mod config;
pub mod roster;
pub mod routes;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::{NAME, build};

/// The service's tables (versions 8000–8999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
