//! Consent decisions and medication-safety alerts.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::{CodedConcept, Envelope};
use crate::time::{Date, Timestamp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ConsentChanged {
    pub envelope: Envelope,
    pub consent_id: String,
    pub grantee_org: Option<String>,
    pub purpose: PurposeOfUse,
    pub scope: Vec<DataCategory>,
    pub decision: ConsentDecision,
    pub valid_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PurposeOfUse {
    Treatment,
    Dispensing,
    Payment,
    Research,
    PublicHealth,
    PatientAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataCategory {
    All,
    Prescriptions,
    Dispensations,
    LabResults,
    Checkups,
    Claims,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsentDecision {
    Granted,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct MedicationAlert {
    pub envelope: Envelope,
    pub alert_id: String,
    pub prescription_id: String,
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    pub message: String,
    pub involved: Vec<AlertLine>,
    pub rule_source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    Other,
    DuplicateIngredient,
    DuplicateTherapeuticClass,
    ContraindicatedCombination,
    InteractionCaution,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, AvroSchema,
)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertSeverity {
    Info,
    Warning,
    High,
    Contraindicated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct AlertLine {
    pub prescription_id: String,
    pub line_no: i32,
    pub issuer_org: String,
    pub drug: CodedConcept,
    pub active_from: Date,
    pub active_until: Option<Date>,
}
