//! Claims from providers (docs/claims.md): a pharmacy's dispensing priced into its claim
//! (調剤報酬) from the NHI drug price and fee tables, with nobody typing it again; clinics' and
//! hospitals' FHIR `Claim`s; and the insurers' decisions shown back to the provider that
//! billed, who corrects and resubmits a returned claim as its next version.

pub mod config;
pub mod dispensing;
pub mod fhir_claim;
pub mod projector;
pub mod routes;
pub mod shares;
pub mod startup;
pub mod store;
pub mod tariff;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The service's tables (versions 7000–7999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
