//! The lab gateway: laboratories and hospital lab systems send HL7 v2 result messages
//! (OUL^R22 as SS-MIX2 / JAHIS define it, ORU^R01 2.5.1); the gateway decodes each in the
//! character set its MSH-18 names, reads it into one `LabResultReported`, publishes it and only
//! then answers `AA`; a message it cannot take is answered `AE` or `AR` with the reason and
//! nothing is published. It also takes FHIR lab results, 特定健診 checkup reports
//! (docs/checkups.md) and the registration of a sender's patient ids with their insurance (the
//! identity rule). docs/labs.md.

pub mod ack;
pub mod charset;
pub mod checkup;
pub mod config;
pub mod fhir;
pub mod hl7;
pub mod identity;
pub mod mllp;
pub mod routes;
pub mod startup;

pub use config::Config;
pub use startup::{GROUP, NAME, build};
