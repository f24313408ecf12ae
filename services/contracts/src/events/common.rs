//! Types shared by several events (`schemas/common/*.avsc`).

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::time::{Date, Timestamp};

/// The first field of every event: who, when, about whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct Envelope {
    pub event_id: String,
    pub occurred_at: Timestamp,
    pub producer_org: String,
    pub patient_ref: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

impl Envelope {
    /// A fresh envelope for an event that happens now. The event id is a UUIDv7, so ids sort by
    /// creation time, which keeps idempotency tables and logs in a useful order.
    pub fn new(producer_org: impl Into<String>, patient_ref: impl Into<String>) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Timestamp::now(),
            producer_org: producer_org.into(),
            patient_ref: patient_ref.into(),
            correlation_id: None,
            causation_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct CodedConcept {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

impl CodedConcept {
    pub fn new(system: impl Into<String>, code: impl Into<String>, display: Option<&str>) -> Self {
        Self {
            system: system.into(),
            code: code.into(),
            display: display.map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct Quantity {
    pub value: f64,
    pub unit: String,
    pub unit_system: Option<String>,
    pub unit_code: Option<String>,
}

impl Quantity {
    pub fn new(value: f64, unit: impl Into<String>) -> Self {
        Self {
            value,
            unit: unit.into(),
            unit_system: None,
            unit_code: None,
        }
    }
}

/// The insurance a service is billed to (`schemas/common/Coverage.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct Coverage {
    pub insurer_number: String,
    #[serde(default)]
    pub insurer_org: Option<String>,
    #[serde(default)]
    pub symbol: Option<String>,
    pub number: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub copay_percent: Option<i32>,
    #[serde(default)]
    pub birth_date: Option<Date>,
    #[serde(default)]
    pub public_programs: Vec<PublicExpense>,
    #[serde(default)]
    pub sex: Option<AdministrativeSex>,
}

/// Sex as FHIR's administrative gender says it (schemas/common/Coverage.avsc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdministrativeSex {
    Unknown,
    Female,
    Male,
    Other,
}

impl AdministrativeSex {
    /// From FHIR `Patient.gender` (`male`, `female`, `other`, `unknown`).
    pub fn from_fhir(gender: &str) -> Option<Self> {
        match gender {
            "female" => Some(Self::Female),
            "male" => Some(Self::Male),
            "other" => Some(Self::Other),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Female => "female",
            Self::Male => "male",
            Self::Other => "other",
        }
    }
}

impl Coverage {
    /// The member id a claim carries: 記号・番号・枝番 as `symbol:number:branch`.
    pub fn member_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.symbol.as_deref().unwrap_or_default(),
            self.number,
            self.branch.as_deref().unwrap_or_default()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct PublicExpense {
    pub payer_number: String,
    #[serde(default)]
    pub recipient_number: Option<String>,
    pub copay_percent: i32,
    #[serde(default)]
    pub valid_from: Option<Date>,
    #[serde(default)]
    pub valid_to: Option<Date>,
}

impl PublicExpense {
    /// Whether the programme covers a service on `day`.
    pub fn covers(&self, day: Date) -> bool {
        self.valid_from.is_none_or(|from| from <= day) && self.valid_to.is_none_or(|to| day <= to)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct PractitionerRef {
    pub id: String,
    pub name: Option<String>,
    pub department: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct InstitutionRef {
    pub org_id: String,
    pub institution_code: Option<String>,
    pub name: Option<String>,
}

/// A lab test result or checkup item. Exactly one `value_*` is expected to be set; producers
/// are validated at the gateway, and consumers must tolerate none (a result "pending").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct Observation {
    pub code: CodedConcept,
    pub value_numeric: Option<f64>,
    pub value_coded: Option<CodedConcept>,
    pub value_text: Option<String>,
    pub unit: Option<String>,
    pub reference_range: Option<ReferenceRange>,
    pub interpretation: Interpretation,
    /// The same test in other code systems (absent in records written before it existed).
    #[serde(default)]
    pub other_codes: Vec<CodedConcept>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
pub struct ReferenceRange {
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "hixbus.common")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Interpretation {
    Unknown,
    Normal,
    Low,
    High,
    CriticallyLow,
    CriticallyHigh,
    Abnormal,
    Positive,
    Negative,
}
