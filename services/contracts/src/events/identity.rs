//! Patient identity across institutions, and the trail of who touched a patient's data.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::Envelope;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct PatientLinked {
    pub envelope: Envelope,
    pub org_id: String,
    pub local_id: String,
    pub local_ref: String,
    pub source: LinkSource,
    pub previous_ref: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LinkSource {
    Unknown,
    Registered,
    Prescription,
}

/// One entry of a patient's access trail (schemas/events/PatientDataAccessed.avsc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct PatientDataAccessed {
    pub envelope: Envelope,
    pub actor: String,
    pub actor_role: Option<String>,
    pub action: String,
    pub subject: String,
    pub purpose: Option<String>,
    pub policy: Option<String>,
}
