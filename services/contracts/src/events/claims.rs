//! Claims and their adjudication. Deliberately free of clinical detail beyond what an insurer
//! needs to pay: no results, no notes.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::{CodedConcept, Envelope, InstitutionRef};
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ClaimLine {
    pub line_no: i32,
    pub service: CodedConcept,
    pub quantity: f64,
    pub unit_price_jpy: Option<i64>,
    pub amount_jpy: i64,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimOutcome {
    Pended,
    Approved,
    PartiallyApproved,
    Denied,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct LineAdjustment {
    pub line_no: i32,
    pub paid_amount_jpy: i64,
    pub reason: Option<CodedConcept>,
}
