//! Claims, their adjudication, and the evidence a claims check needs. Deliberately free of
//! clinical detail beyond what an insurer needs to pay: no results, no notes, no dosage text.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::{CodedConcept, Coverage, Envelope, InstitutionRef};
use crate::time::Date;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ClaimSubmitted {
    pub envelope: Envelope,
    pub claim_id: String,
    pub insurer_org: String,
    pub member_id: String,
    pub provider: InstitutionRef,
    pub service_start: Date,
    pub service_end: Date,
    pub diagnoses: Vec<CodedConcept>,
    pub lines: Vec<ClaimLine>,
    pub total_amount_jpy: i64,
    pub patient_copay_jpy: i64,
    #[serde(default)]
    pub claim_type: ClaimType,
    #[serde(default = "first_version")]
    pub version: i32,
    #[serde(default)]
    pub replaces_event_id: Option<String>,
    #[serde(default)]
    pub prescription_id: Option<String>,
    #[serde(default)]
    pub prescription_issuer_org: Option<String>,
    #[serde(default)]
    pub coverage: Option<Coverage>,
    #[serde(default)]
    pub insurer_share_jpy: i64,
    #[serde(default)]
    pub public_expense_jpy: i64,
    #[serde(default)]
    pub tariff: Option<String>,
}

fn first_version() -> i32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ClaimLine {
    pub line_no: i32,
    pub service: CodedConcept,
    pub quantity: f64,
    pub unit_price_jpy: Option<i64>,
    pub amount_jpy: i64,
    #[serde(default)]
    pub line_type: ClaimLineType,
    #[serde(default)]
    pub prescription_line_no: Option<i32>,
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimLineType {
    #[default]
    Other,
    Drug,
    Fee,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimType {
    #[default]
    Unknown,
    Pharmacy,
    Professional,
    Institutional,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ClaimAdjudicated {
    pub envelope: Envelope,
    pub claim_id: String,
    pub insurer_org: String,
    pub provider_org: String,
    pub outcome: ClaimOutcome,
    pub paid_amount_jpy: i64,
    pub reasons: Vec<CodedConcept>,
    pub line_adjustments: Vec<LineAdjustment>,
    #[serde(default = "first_version")]
    pub claim_version: i32,
    #[serde(default)]
    pub claim_event_id: Option<String>,
    #[serde(default)]
    pub reduced_by_jpy: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimOutcome {
    Pended,
    Approved,
    PartiallyApproved,
    Denied,
    Returned,
}

impl ClaimOutcome {
    /// The word a provider reads.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimOutcome::Pended => "pended",
            ClaimOutcome::Approved => "accepted",
            ClaimOutcome::PartiallyApproved => "reduced",
            ClaimOutcome::Denied => "denied",
            ClaimOutcome::Returned => "returned",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct LineAdjustment {
    pub line_no: i32,
    pub paid_amount_jpy: i64,
    pub reason: Option<CodedConcept>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ClaimEvidence {
    pub envelope: Envelope,
    pub prescription_id: String,
    pub insurer_org: String,
    pub stage: EvidenceStage,
    pub issuer: InstitutionRef,
    pub issued_on: Date,
    pub prescribed: Vec<EvidenceLine>,
    pub dispensed: Vec<EvidenceLine>,
    pub pharmacy: Option<InstitutionRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EvidenceStage {
    Issued,
    Dispensed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct EvidenceLine {
    pub line_no: i32,
    pub drug: CodedConcept,
    pub quantity: f64,
    pub unit: String,
    pub days_supply: Option<i32>,
    pub substituted: bool,
}
