//! Delivery to insurers: each insurer receives exactly its own members' claims, the evidence
//! its claims check needs, and the specific health checkups (特定健診) the law sends it — on its
//! own Kafka topic (`insurer.<id>.feed`, which one prefixed ACL grants), and, for an insurer
//! without Kafka, as a paged API and a live stream, each entry numbered so a reader that
//! reconnects resumes exactly where it stopped: nothing missed, nothing twice.
//! docs/claims.md, docs/checkups.md.

pub mod config;
pub mod delivery;
pub mod feed;
pub mod routes;
pub mod startup;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The feed's tables (versions 6000–6999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
