//! The prescription lifecycle: issued, cancelled, dispensed.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::{CodedConcept, Coverage, Envelope, InstitutionRef, PractitionerRef, Quantity};
use crate::time::Date;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct PrescriptionIssued {
    pub envelope: Envelope,
    pub prescription_id: String,
    pub prescriber: PractitionerRef,
    pub issuer: InstitutionRef,
    /// `None`: an open prescription that any pharmacy may claim with the access code.
    pub target_pharmacy_org: Option<String>,
    /// Always empty: the code travels only as [`PrescriptionIssued::access_code_digest`]. Kept
    /// because FULL_TRANSITIVE compatibility cannot drop a field without a default.
    pub access_code: String,
    pub issued_on: Date,
    pub expires_on: Option<Date>,
    pub lines: Vec<MedicationLine>,
    pub notes: Option<String>,
    /// `<key id>:<hex HMAC-SHA256>` of the access code (see `hixbus_access::codes`).
    pub access_code_digest: Option<String>,
    /// What the dispensing pharmacy bills; `None` when the prescription named no insurance.
    #[serde(default)]
    pub coverage: Option<Coverage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct MedicationLine {
    pub line_no: i32,
    pub rp_group: Option<i32>,
    pub drug: CodedConcept,
    pub other_codes: Vec<CodedConcept>,
    pub dose_per_administration: Option<Quantity>,
    pub dose_per_day: Option<Quantity>,
    pub route: Option<CodedConcept>,
    pub timing_text: String,
    pub timing_code: Option<CodedConcept>,
    pub days_supply: Option<i32>,
    pub quantity: Quantity,
    pub generic_substitution_allowed: bool,
    pub instructions: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct PrescriptionCancelled {
    pub envelope: Envelope,
    pub prescription_id: String,
    pub cancelled_by: PractitionerRef,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct PrescriptionClaimed {
    pub envelope: Envelope,
    pub prescription_id: String,
    pub issuer_org: String,
    pub pharmacy: InstitutionRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct PrescriptionDispensed {
    pub envelope: Envelope,
    pub prescription_id: String,
    pub issuer_org: String,
    pub pharmacy: InstitutionRef,
    pub pharmacist: PractitionerRef,
    pub lines: Vec<DispensedLine>,
    pub partial: bool,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct DispensedLine {
    pub prescription_line_no: i32,
    pub drug: CodedConcept,
    pub quantity: Quantity,
    pub days_supply: Option<i32>,
    pub substituted: bool,
    pub substitution_reason: Option<String>,
}
