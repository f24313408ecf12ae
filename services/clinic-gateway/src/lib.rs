//! The clinic gateway: clinic systems POST FHIR R4 prescriptions (a JP e-prescription document
//! `Bundle` or a single `MedicationRequest`); the gateway authenticates the clinic, validates and
//! maps the prescription to one `PrescriptionIssued` event, publishes it, and answers with the
//! prescription id and the access code the patient shows at any pharmacy. It also keeps the
//! clinic view (what became of each prescription, from the events), takes cancellations, and
//! keeps the results inbox (the lab reports of the clinic's orders, critical values first).

pub mod config;
pub mod fhir;
pub mod results;
pub mod results_api;
pub mod routes;
pub mod startup;
pub mod store;
pub mod view;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The gateway's tables: submissions, the clinic view and the results inbox (versions 4000–4999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
