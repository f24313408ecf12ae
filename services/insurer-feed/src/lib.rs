//! The insurer feed: an insurer without Kafka reads exactly its own members' events — the
//! specific health checkups (特定健診) the law sends it, and (next) its claims — as a paged API
//! and a live stream, each entry numbered so a reader that reconnects resumes exactly where it
//! stopped: nothing missed, nothing twice. docs/checkups.md.

pub mod config;
pub mod feed;
pub mod routes;
pub mod startup;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The feed's tables (versions 6000–6999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
