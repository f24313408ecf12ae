//! Typed hixbus events, one Rust struct per `schemas/events/*.avsc` record.
//!
//! The structs derive their Avro schema; `tests/schema_drift.rs` fails when a derived schema and
//! its `.avsc` file disagree on anything that affects encoding (names, types, logical types,
//! field order), so the files stay the source of truth and the code cannot drift from them.

mod claims;
mod clinical;
mod common;
mod identity;
mod prescription;
mod research;
mod safety;

use apache_avro::types::Value;
use apache_avro::{AvroSchema, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use claims::{
    ClaimAdjudicated, ClaimEvidence, ClaimLine, ClaimLineType, ClaimOutcome, ClaimSubmitted,
    ClaimType, EvidenceLine, EvidenceStage, LineAdjustment,
};
pub use clinical::{
    CheckupCompleted, CheckupType, LabResultReported, QuestionnaireAnswer, ReportStatus, Specimen,
};
pub use common::{
    AdministrativeSex, CodedConcept, Coverage, Envelope, InstitutionRef, Interpretation,
    Observation, PractitionerRef, PublicExpense, Quantity, ReferenceRange,
};
pub use identity::{LinkSource, PatientDataAccessed, PatientLinked};
pub use prescription::{
    DispensedLine, MedicationLine, PrescriptionCancelled, PrescriptionClaimed,
    PrescriptionDispensed, PrescriptionIssued,
};
pub use research::{
    GroupShare, ReleaseOutcome, ResearchItemKind, ResearchMode, ResearchRecord, ResearchReleased,
};
pub use safety::{
    AlertKind, AlertLine, AlertSeverity, ConsentChanged, ConsentDecision, DataCategory,
    MedicationAlert, PurposeOfUse,
};

/// A typed event that can travel on the bus.
pub trait EventRecord:
    Serialize
    + DeserializeOwned
    + AvroSchema
    + Into<Event>
    + TryFrom<Event, Error = Event>
    + Clone
    + Send
    + Sync
    + 'static
{
    /// The record name, as in the catalog and the `.avsc` file name.
    const NAME: &'static str;

    fn envelope(&self) -> &Envelope;
}

/// One record of type `T` from the front of `body`, and how many bytes follow it.
fn read_fast<T: DeserializeOwned>(
    schema: &serde_avro_fast::Schema,
    body: &[u8],
) -> Result<(T, usize), serde_avro_fast::de::DeError> {
    use serde_avro_fast::de::{DeserializerConfig, DeserializerState, read::SliceRead};
    use std::io::BufRead;
    let mut config = DeserializerConfig::new(schema);
    // Every item of every array in the catalog takes at least one byte, so a block that claims
    // more items than the body has bytes is corrupt: refused before it is looped over.
    config.max_seq_size = body.len();
    let mut state = DeserializerState::with_config(SliceRead::new(body), config);
    let value = T::deserialize(state.deserializer())?;
    let unread = state.into_reader().fill_buf().map_or(0, <[u8]>::len);
    Ok((value, unread))
}

macro_rules! event_set {
    ($($name:ident),+ $(,)?) => {
        /// Any hixbus event: what a consumer gets when one topic carries several event types.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "event_type")]
        pub enum Event {
            $($name($name),)+
        }

        $(
            impl EventRecord for $name {
                const NAME: &'static str = stringify!($name);

                fn envelope(&self) -> &Envelope {
                    &self.envelope
                }
            }

            impl From<$name> for Event {
                fn from(event: $name) -> Self {
                    Event::$name(event)
                }
            }

            impl TryFrom<Event> for $name {
                /// The event, unchanged, when it is of another type.
                type Error = Event;

                fn try_from(event: Event) -> Result<Self, Event> {
                    match event {
                        Event::$name(e) => Ok(e),
                        other => Err(other),
                    }
                }
            }
        )+

        impl Event {
            /// Record names of every event type, in catalog order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];

            pub fn name(&self) -> &'static str {
                match self {
                    $(Event::$name(_) => stringify!($name),)+
                }
            }

            pub fn envelope(&self) -> &Envelope {
                match self {
                    $(Event::$name(e) => &e.envelope,)+
                }
            }

            /// Encodes the Avro body (no framing) with this build's schema for the event's type.
            pub fn write_body(&self, buf: &mut Vec<u8>) -> Result<(), crate::codec::EncodeError> {
                match self {
                    $(Event::$name(e) => crate::codec::encode_body(e, buf),)+
                }
            }

            pub fn envelope_mut(&mut self) -> &mut Envelope {
                match self {
                    $(Event::$name(e) => &mut e.envelope,)+
                }
            }

            /// The schema the Rust type derives, for the drift check.
            pub fn derived_schema(name: &str) -> Option<Schema> {
                match name {
                    $(stringify!($name) => Some($name::get_schema()),)+
                    _ => None,
                }
            }

            /// Decodes straight from Avro bytes into the typed event, with the number of bytes
            /// left unread: the fast path, valid only when the bytes were written with exactly
            /// the schema the type derives.
            pub(crate) fn read_typed(
                name: &str,
                schema: &serde_avro_fast::Schema,
                body: &[u8],
            ) -> Option<Result<(Event, usize), serde_avro_fast::de::DeError>> {
                match name {
                    $(stringify!($name) => Some(
                        read_fast::<$name>(schema, body).map(|(e, unread)| (Event::$name(e), unread)),
                    ),)+
                    _ => None,
                }
            }

            /// Builds the typed event from a generic value already resolved to our schema:
            /// the slow path for records written with another version of the schema.
            pub(crate) fn from_resolved_value(
                name: &str,
                value: &Value,
            ) -> Option<Result<Event, apache_avro::Error>> {
                match name {
                    $(stringify!($name) => Some(apache_avro::from_value::<$name>(value).map(Event::$name)),)+
                    _ => None,
                }
            }
        }
    };
}

event_set!(
    PrescriptionIssued,
    PrescriptionCancelled,
    PrescriptionClaimed,
    PrescriptionDispensed,
    LabResultReported,
    CheckupCompleted,
    ClaimSubmitted,
    ClaimEvidence,
    ClaimAdjudicated,
    ConsentChanged,
    MedicationAlert,
    PatientLinked,
    PatientDataAccessed,
    ResearchRecord,
    ResearchReleased,
);
