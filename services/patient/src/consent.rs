//! The consent policy as the patient record applies it: the rules are `hixbus_consent`'s (one
//! version for every service that enforces them); what is the record's own is which category
//! each kind of entry is consented under.

pub use hixbus_consent::policy::*;
use hixbus_contracts::DataCategory;

use crate::store::Kind;

/// The category a record entry is consented under.
pub fn category(kind: Kind) -> DataCategory {
    match kind {
        Kind::Prescription | Kind::Alert => DataCategory::Prescriptions,
        Kind::Dispensing => DataCategory::Dispensations,
        Kind::LabResult => DataCategory::LabResults,
        Kind::Checkup => DataCategory::Checkups,
        Kind::Claim => DataCategory::Claims,
    }
}
