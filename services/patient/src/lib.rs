//! The patient's own record (docs/patients.md): every prescription, dispensing, safety alert,
//! lab result, checkup and claim about a patient, from every institution, kept from the topics
//! and read by the patient alone, signed in with their OpenID Connect provider and enrolled
//! through an institution that checked their insurance card. Views: the timeline, current
//! medications, lab trends, checkups year over year, medical expenses, and the whole record as
//! a FHIR R4 Bundle. The patient's consents decide what treating institutions see of other
//! institutions' data in their summary (`consent.rs`, `summary.rs`).

pub mod config;
pub mod consent;
pub mod consents;
pub mod delegation;
pub mod demo;
pub mod export;
pub mod projector;
pub mod record;
pub mod routes;
pub mod signin;
pub mod startup;
pub mod store;
pub mod summary;
pub mod trail;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The service's tables (versions 9000–9999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
