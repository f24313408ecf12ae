//! Typed events to Confluent-framed Avro and back.
//!
//! Encoding serializes the Rust struct straight into Avro bytes (no intermediate `Value` tree).
//! Decoding takes the same fast path when the record was written with the schema this build
//! knows; records written with another version of the schema (an older producer, say) go through
//! Avro schema resolution instead, so evolution works in both directions.
//!
//! The fast path is `serde_avro_fast`: it compiles each schema once into a graph of nodes, so a
//! record is written or read without looking up field names or building values, several times
//! faster than apache-avro's serde layer (docs/performance.md). apache-avro keeps everything
//! else: parsing and comparing writer schemas, compatibility, and resolving older versions.
//!
//! Decoding answers `Result<Result<Decoded, DataError>, TransientError>`: the outer error means
//! "try again later" (the registry is unreachable), the inner one means "this record can never be
//! decoded" and belongs in a dead-letter topic.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use hixbus_registry_client::{GetSchemaError, LookupError, RegisterError, RegistryClient};

use crate::catalog::{Catalog, CatalogEntry};
use crate::events::{Event, EventRecord};
use crate::wire::{self, WireError};

/// How the codec learns the schema id to stamp on records it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaIdStrategy {
    /// Look the schema up; fail if it was never registered. For production, where schemas are
    /// registered by the compatibility gate (`hixbus schemas register`), not by services.
    #[default]
    Lookup,
    /// Register the schema on first use (Confluent's `auto.register.schemas`). For dev and tests.
    Register,
}

/// A record ready for Kafka: the Confluent-framed value and the id it was framed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub schema_id: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub schema_id: u32,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("schema registry unavailable while resolving {subject}: {source}")]
    Transient {
        subject: String,
        source: hixbus_registry_client::ApiError,
    },
    #[error("the {subject} schema is not usable: {reason}")]
    Schema { subject: String, reason: String },
    #[error("cannot encode {event}: {source}")]
    Avro {
        event: &'static str,
        source: serde_avro_fast::ser::SerError,
    },
}

/// Decoding could not finish for now; the same record may decode later.
#[derive(Debug, thiserror::Error)]
#[error("schema registry unavailable while fetching schema {schema_id}: {source}")]
pub struct TransientError {
    pub schema_id: u32,
    pub source: hixbus_registry_client::ApiError,
}

/// The record itself is unusable; retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("not a Confluent-framed record: {0}")]
    Framing(#[from] WireError),
    #[error("schema id {0} is unknown to the registry")]
    UnknownSchemaId(u32),
    #[error("schema id {schema_id} is not a usable Avro schema: {reason}")]
    InvalidWriterSchema { schema_id: u32, reason: String },
    #[error("schema id {schema_id} is {full_name}, which is not a hixbus event")]
    UnknownEventType { schema_id: u32, full_name: String },
    #[error("schema id {schema_id} ({full_name}) cannot be read as this build's {event}: {reason}")]
    Incompatible {
        schema_id: u32,
        full_name: String,
        event: &'static str,
        reason: String,
    },
    #[error("{event} body does not match schema id {schema_id}: {reason}")]
    Body {
        schema_id: u32,
        event: &'static str,
        reason: String,
    },
}

/// The per-event-type compiled schema, built once for the embedded catalog.
struct TypedCodec {
    entry: &'static CatalogEntry,
    name: &'static str,
    fast: serde_avro_fast::Schema,
}

static TYPED: LazyLock<HashMap<&'static str, TypedCodec>> = LazyLock::new(|| {
    let catalog = Catalog::embedded();
    Event::NAMES
        .iter()
        .filter_map(|name| {
            let entry = catalog.entry(name)?;
            // Parsing only fails on a schema apache-avro also refuses, which the embedded catalog
            // (loaded and tested at build time) cannot contain; a test checks every event type
            // has its codec.
            let fast = entry.schema_json.parse().ok()?;
            Some((*name, TypedCodec { entry, name, fast }))
        })
        .collect()
});

fn typed(name: &str) -> Option<&'static TypedCodec> {
    TYPED.get(name)
}

/// Encodes the Avro body of `event` (no framing) with the embedded schema.
pub fn encode_body<E: EventRecord>(event: &E, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let codec = typed(E::NAME).ok_or(EncodeError::Schema {
        subject: E::NAME.to_owned(),
        reason: "event type is missing from the embedded catalog".to_owned(),
    })?;
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&codec.fast);
    serde_avro_fast::to_datum(event, &mut *buf, &mut config)
        .map(drop)
        .map_err(|source| EncodeError::Avro {
            event: E::NAME,
            source,
        })
}

/// Decodes an Avro body (no framing) written with this build's schema for `event`.
pub fn decode_body(event: &str, body: &[u8]) -> Result<Event, DataError> {
    let codec = typed(event).ok_or_else(|| DataError::UnknownEventType {
        schema_id: 0,
        full_name: event.to_owned(),
    })?;
    decode_with(0, &WriterSchema::Native(codec.name), body)
}

/// A schema fetched by id, and how this build reads records written with it.
#[derive(Debug)]
enum WriterSchema {
    /// Byte-for-byte our schema: decode straight into the typed struct.
    Native(&'static str),
    /// Another version of one of our events: resolve through Avro's rules.
    Evolved {
        event: &'static str,
        full_name: String,
        schema: Box<Schema>,
    },
    /// Known to be unusable; cached so a poison stream does not hammer the registry.
    Unusable(DataError),
}

/// Encodes and decodes hixbus events in the Confluent wire format against a schema registry.
///
/// Schema ids are cached for the life of the codec: ids are immutable in Confluent-compatible
/// registries, so a cached id never goes stale. A miss is resolved once: callers that miss
/// together wait for the first one's answer instead of each asking the registry (a service that
/// starts under load once sent thousands of identical lookups at once, exhausted the
/// registry's connections and failed them all).
#[derive(Debug)]
pub struct Codec {
    registry: RegistryClient,
    strategy: SchemaIdStrategy,
    ids: RwLock<HashMap<&'static str, u32>>,
    writers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
    resolving: tokio::sync::Mutex<()>,
}

impl Codec {
    pub fn new(registry: RegistryClient, strategy: SchemaIdStrategy) -> Self {
        Self {
            registry,
            strategy,
            ids: RwLock::default(),
            writers: RwLock::default(),
            resolving: tokio::sync::Mutex::new(()),
        }
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// Frames `event` with its subject's schema id.
    pub async fn encode<E: EventRecord>(&self, event: &E) -> Result<Encoded, EncodeError> {
        let schema_id = self.schema_id(E::NAME).await?;
        let mut payload = Vec::with_capacity(256);
        wire::write_header(&mut payload, schema_id);
        encode_body(event, &mut payload)?;
        Ok(Encoded { schema_id, payload })
    }

    /// Frames an event whose type is only known at run time.
    pub async fn encode_event(&self, event: &Event) -> Result<Encoded, EncodeError> {
        let schema_id = self.schema_id(event.name()).await?;
        let mut payload = Vec::with_capacity(256);
        wire::write_header(&mut payload, schema_id);
        event.write_body(&mut payload)?;
        Ok(Encoded { schema_id, payload })
    }

    /// The schema id records of this event type are written with.
    pub async fn schema_id(&self, name: &'static str) -> Result<u32, EncodeError> {
        if let Some(id) = read_lock(&self.ids).get(name) {
            return Ok(*id);
        }
        let _resolving = self.resolving.lock().await;
        if let Some(id) = read_lock(&self.ids).get(name) {
            return Ok(*id);
        }
        let entry = typed(name)
            .ok_or(EncodeError::Schema {
                subject: name.to_owned(),
                reason: "event type is missing from the embedded catalog".to_owned(),
            })?
            .entry;
        let id = self.resolve_id(entry).await?;
        write_lock(&self.ids).insert(name, id);
        // Our own schema is native by definition; seeding the reader cache saves a fetch.
        write_lock(&self.writers).insert(id, Arc::new(WriterSchema::Native(name)));
        Ok(id)
    }

    async fn resolve_id(&self, entry: &CatalogEntry) -> Result<u32, EncodeError> {
        let subject = &entry.subject;
        let unusable = |reason: String| EncodeError::Schema {
            subject: subject.clone(),
            reason,
        };
        match self.strategy {
            SchemaIdStrategy::Register => {
                match self.registry.register(subject, &entry.schema_json).await {
                    Ok(id) => Ok(id),
                    Err(RegisterError::Transient(source)) => Err(EncodeError::Transient {
                        subject: subject.clone(),
                        source,
                    }),
                    Err(e) => Err(unusable(e.to_string())),
                }
            }
            SchemaIdStrategy::Lookup => {
                match self.registry.lookup(subject, &entry.schema_json).await {
                    Ok(found) => Ok(found.id),
                    Err(LookupError::Transient(source)) => Err(EncodeError::Transient {
                        subject: subject.clone(),
                        source,
                    }),
                    Err(LookupError::SubjectNotFound | LookupError::SchemaNotFound) => {
                        Err(unusable(
                            "this build's schema is not registered; run `hixbus schemas register`"
                                .to_owned(),
                        ))
                    }
                    Err(e) => Err(unusable(e.to_string())),
                }
            }
        }
    }

    /// Decodes a Confluent-framed record into a typed event.
    pub async fn decode(
        &self,
        record: &[u8],
    ) -> Result<Result<Decoded, DataError>, TransientError> {
        let (schema_id, body) = match wire::split(record) {
            Ok(parts) => parts,
            Err(e) => return Ok(Err(e.into())),
        };
        let writer = self.writer_schema(schema_id).await?;
        Ok(decode_with(schema_id, &writer, body).map(|event| Decoded { schema_id, event }))
    }

    async fn writer_schema(&self, schema_id: u32) -> Result<Arc<WriterSchema>, TransientError> {
        if let Some(found) = read_lock(&self.writers).get(&schema_id) {
            return Ok(found.clone());
        }
        let _resolving = self.resolving.lock().await;
        if let Some(found) = read_lock(&self.writers).get(&schema_id) {
            return Ok(found.clone());
        }
        let writer = match self.registry.schema_by_id(schema_id).await {
            Ok(text) => classify_writer(schema_id, &text),
            Err(GetSchemaError::NotFound(_)) => {
                WriterSchema::Unusable(DataError::UnknownSchemaId(schema_id))
            }
            Err(GetSchemaError::Transient(source) | GetSchemaError::Other(source)) => {
                // An unexpected answer is treated as transient too: dead-lettering a record
                // because the registry misbehaved would lose nothing, but would need a redrive.
                return Err(TransientError { schema_id, source });
            }
        };
        let writer = Arc::new(writer);
        write_lock(&self.writers).insert(schema_id, writer.clone());
        Ok(writer)
    }
}

fn classify_writer(schema_id: u32, text: &str) -> WriterSchema {
    let schema = match Schema::parse_str(text) {
        Ok(schema) => schema,
        Err(e) => {
            return WriterSchema::Unusable(DataError::InvalidWriterSchema {
                schema_id,
                reason: e.to_string(),
            });
        }
    };
    let full_name = match &schema {
        Schema::Record(record) => record.name.fullname(None),
        other => format!("{other:?}").chars().take(60).collect(),
    };
    let Some(entry) = Catalog::embedded().by_full_name(&full_name) else {
        return WriterSchema::Unusable(DataError::UnknownEventType {
            schema_id,
            full_name,
        });
    };
    let Some(codec) = typed(&entry.name) else {
        return WriterSchema::Unusable(DataError::UnknownEventType {
            schema_id,
            full_name,
        });
    };
    if schema.canonical_form() == entry.schema.canonical_form() {
        return WriterSchema::Native(codec.name);
    }
    if let Err(e) =
        apache_avro::schema_compatibility::SchemaCompatibility::can_read(&schema, &entry.schema)
    {
        return WriterSchema::Unusable(DataError::Incompatible {
            schema_id,
            full_name,
            event: codec.name,
            reason: e.to_string(),
        });
    }
    WriterSchema::Evolved {
        event: codec.name,
        full_name,
        schema: Box::new(schema),
    }
}

fn decode_with(schema_id: u32, writer: &WriterSchema, mut body: &[u8]) -> Result<Event, DataError> {
    let body_error = |event: &'static str, e: &dyn std::fmt::Display| DataError::Body {
        schema_id,
        event,
        reason: e.to_string(),
    };
    match writer {
        WriterSchema::Unusable(e) => Err(e.clone()),
        WriterSchema::Native(name) => {
            let codec = typed(name).ok_or_else(|| DataError::UnknownEventType {
                schema_id,
                full_name: (*name).to_owned(),
            })?;
            let (event, unread) = Event::read_typed(name, &codec.fast, body)
                .ok_or_else(|| DataError::UnknownEventType {
                    schema_id,
                    full_name: (*name).to_owned(),
                })?
                .map_err(|e| body_error(codec.name, &e))?;
            reject_trailing_bytes(schema_id, codec.name, unread)?;
            Ok(event)
        }
        WriterSchema::Evolved {
            event,
            full_name,
            schema,
        } => {
            let codec = typed(event).ok_or_else(|| DataError::UnknownEventType {
                schema_id,
                full_name: full_name.clone(),
            })?;
            let value = GenericDatumReader::builder(schema)
                .reader_schema(&codec.entry.schema)
                .human_readable(false)
                .build()
                .and_then(|reader| reader.read_value(&mut body))
                .map_err(|e| body_error(codec.name, &e))?;
            reject_trailing_bytes(schema_id, codec.name, body.len())?;
            Event::from_resolved_value(event, &value)
                .ok_or_else(|| DataError::UnknownEventType {
                    schema_id,
                    full_name: full_name.clone(),
                })?
                .map_err(|e| body_error(codec.name, &e))
        }
    }
}

/// A body longer than its schema describes was not written by an Avro encoder for that schema:
/// a truncated-and-concatenated or mislabelled record. Better dead-lettered than half-trusted.
fn reject_trailing_bytes(
    schema_id: u32,
    event: &'static str,
    unread: usize,
) -> Result<(), DataError> {
    if unread == 0 {
        Ok(())
    } else {
        Err(DataError::Body {
            schema_id,
            event,
            reason: format!("{unread} unread bytes after the record"),
        })
    }
}

// Poisoning only happens if a thread panicked while holding the lock; the maps hold plain
// cache entries that are valid at every step, so continuing with the inner value is safe.
fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
