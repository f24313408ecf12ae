//! What research projects receive: de-identified records and the manifest of each release
//! (docs/research.md).

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::Envelope;
use crate::time::Date;

/// One de-identified item released to one project (schemas/events/ResearchRecord.avsc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ResearchRecord {
    pub envelope: Envelope,
    pub project: String,
    pub kind: ResearchItemKind,
    pub institution: Option<String>,
    pub day: Option<Date>,
    pub age_band: Option<String>,
    pub region: Option<String>,
    pub code_system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub days_supply: Option<i32>,
    pub quantity: Option<f64>,
    #[serde(default)]
    pub sex: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResearchItemKind {
    Other,
    Prescribed,
    Dispensed,
    LabResult,
    CheckupItem,
}

/// The manifest of one release (schemas/events/ResearchReleased.avsc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct ResearchReleased {
    pub envelope: Envelope,
    pub project: String,
    pub researcher_org: String,
    pub mode: ResearchMode,
    pub key_id: String,
    pub outcome: ReleaseOutcome,
    pub records: i32,
    pub subjects: i32,
    pub k_required: i32,
    pub k_achieved: Option<i32>,
    pub quasi_identifiers: Vec<String>,
    pub generalized: Vec<String>,
    pub suppressed: i32,
    pub opted_out: i32,
    pub reason: Option<String>,
    pub policy_version: String,
    pub fairness: Vec<GroupShare>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResearchMode {
    Pseudonymized,
    Anonymized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleaseOutcome {
    Released,
    Held,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct GroupShare {
    pub dimension: String,
    pub group: String,
    pub source_share: f64,
    pub released_share: f64,
}
