//! The research export (docs/research.md): each research project receives, on its own topic,
//! de-identified records of the prescriptions, dispensings, lab results and checkups of the
//! patients who did not opt out — pseudonymized with the project's own key, dates shifted,
//! ages banded, regions coarsened, free text dropped — released in batches only once each
//! batch is k-anonymous, with a manifest and a fairness report per release. It fails closed:
//! whatever cannot be de-identified is held or dead-lettered, never published.

pub mod config;
pub mod deid;
pub mod export;
pub mod items;
pub mod kanon;
pub mod population;
pub mod projects;
pub mod release;
pub mod routes;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::{GROUP, NAME, build};

/// The export's tables (versions 10000–10999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
