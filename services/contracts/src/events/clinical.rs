//! Results and checkups.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use super::common::{CodedConcept, Envelope, InstitutionRef, Observation};
use crate::time::{Date, Timestamp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct LabResultReported {
    pub envelope: Envelope,
    pub report_id: String,
    pub order_id: String,
    pub ordering: Option<InstitutionRef>,
    pub performing_lab: InstitutionRef,
    pub status: ReportStatus,
    pub specimen: Specimen,
    pub results: Vec<Observation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportStatus {
    Preliminary,
    Final,
    Corrected,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct Specimen {
    pub specimen_id: Option<String>,
    pub specimen_type: CodedConcept,
    pub collected_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct CheckupCompleted {
    pub envelope: Envelope,
    pub checkup_id: String,
    pub checkup_type: CheckupType,
    pub performed_by: InstitutionRef,
    pub performed_on: Date,
    pub items: Vec<Observation>,
    pub questionnaire: Vec<QuestionnaireAnswer>,
    pub overall_assessment: Option<String>,
    /// The patient's insurer (absent in records written before it existed).
    #[serde(default)]
    pub insurer: Option<InstitutionRef>,
    #[serde(default)]
    pub metabolic_syndrome: Option<CodedConcept>,
    #[serde(default)]
    pub guidance_level: Option<CodedConcept>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
/// `SpecificHealthCheckup` is 特定健診, the annual metabolic-syndrome checkup insurers run for
/// members aged 40–74; `CompleteMedicalCheckup` is 人間ドック.
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckupType {
    Other,
    SpecificHealthCheckup,
    EmployeeHealthCheckup,
    CompleteMedicalCheckup,
    SchoolHealthCheckup,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.events")]
pub struct QuestionnaireAnswer {
    pub question: CodedConcept,
    pub answer_coded: Option<CodedConcept>,
    pub answer_text: Option<String>,
}
