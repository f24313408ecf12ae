//! The medication-safety check on the stream: keeps every patient's active medication lines
//! from all institutions' prescriptions and dispensing, checks each new prescription against
//! them (duplicate ingredient, duplicate therapeutic class, contraindicated combination) and
//! publishes findings as `MedicationAlert`, which the pharmacy inbox and the clinic view show.
//! Rules and their sources: `data/` and docs/medication-safety.md.

pub mod config;
pub mod rules;
pub mod service;
pub mod startup;
pub mod state;

pub use config::Config;
pub use rules::Rules;
pub use service::{GROUP, SafetyError, start};
pub use startup::{NAME, build};
