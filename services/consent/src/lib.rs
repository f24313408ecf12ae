//! The patient's consent as the bus enforces it (docs/patients.md, "Consent"): one policy
//! (`policy`), the consent book every enforcing service keeps from the `consents` topic
//! (`book`), and what an institution may see of a medication-safety alert that involves
//! another institution's prescription (`alerts`). The patient service, the pharmacy service
//! and the clinic gateway all decide with these, so a patient's decision means the same
//! wherever their data is shown.

pub mod alerts;
pub mod book;
pub mod policy;

pub use alerts::{ShownAlert, shown};
pub use book::ConsentBook;
pub use policy::{Basis, BreakGlass, POLICY_VERSION};

/// The consent book's table (versions 2000–2999).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
