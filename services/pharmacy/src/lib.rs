//! The pharmacy service. Prescriptions arrive from the `prescriptions` topic into a read model;
//! each pharmacy sees its inbox (prescriptions addressed to it, and open ones it claimed with
//! the patient's access code), live over server-sent events, with any medication-safety alerts
//! (another institution's side of an alert only under the patient's consent: `alerts.rs`);
//! dispensing publishes `PrescriptionDispensed`, at most once per prescription.

pub mod alerts;
pub mod changes;
pub mod claims;
pub mod config;
pub mod projector;
pub mod routes;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The read model's tables (versions 5000–5999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
