//! The event catalog: `schemas/catalog.toml` plus the `.avsc` files, resolved into one
//! self-contained schema per event.
//!
//! Shared types (the envelope, coded concepts, …) are written once in `schemas/common/` and
//! referenced by full name from the event files. Confluent serializers expect each subject's
//! schema to stand alone, so the loader inlines each shared type at its first use, exactly as a
//! hand-written self-contained schema would define it. Registries then see ordinary schemas and
//! need no schema references.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::LazyLock;

use apache_avro::Schema;
use serde::Deserialize;
use serde_json::Value as Json;

/// One event type and where it travels.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// Record name, e.g. `PrescriptionIssued`.
    pub name: String,
    /// Avro full name, e.g. `hixbus.events.PrescriptionIssued`.
    pub full_name: String,
    pub topic: String,
    /// Registry subject the value schema is registered under.
    pub subject: String,
    pub producers: Vec<String>,
    pub consumers: Vec<String>,
    pub doc: Option<String>,
    /// The self-contained schema as registered (compact JSON, docs kept).
    pub schema_json: String,
    pub schema: Schema,
}

impl CatalogEntry {
    /// Whether the event travels only on each insurer's own topic ([`insurer_topic`]).
    pub fn is_per_insurer(&self) -> bool {
        self.topic == INSURER_TOPIC
    }

    /// Whether the event travels only on each research project's own topic
    /// ([`research_topic`]).
    pub fn is_per_project(&self) -> bool {
        self.topic == RESEARCH_TOPIC
    }

    /// Whether the event travels on topics of one recipient each (an insurer's, a research
    /// project's), named by the publisher, rather than on one shared topic.
    pub fn is_per_recipient(&self) -> bool {
        self.is_per_insurer() || self.is_per_project()
    }
}

/// How the catalog writes the per-project research topic.
pub const RESEARCH_TOPIC: &str = "research.{project}.records";

/// The topic only research project `project` reads: its de-identified records. Named, like an
/// insurer's, so that one prefixed ACL (`research.<id>.`) grants exactly it.
pub fn research_topic(project: &str) -> String {
    RESEARCH_TOPIC.replace("{project}", project)
}

/// The prefix of every topic (and consumer group) that belongs to research project `project`.
pub fn research_prefix(project: &str) -> String {
    format!("research.{project}.")
}

/// How the catalog writes the per-insurer topic.
pub const INSURER_TOPIC: &str = "insurer.{insurer}.feed";

/// The topic only `insurer` reads: its members' claims, the specific health checkups the law
/// sends it, and the evidence its claims check needs. Named so that one Apache Kafka prefixed
/// ACL (`insurer.<id>.`) grants exactly it; the trailing dot keeps `insurer-a` from matching
/// `insurer-ab`'s topic.
pub fn insurer_topic(insurer: &str) -> String {
    INSURER_TOPIC.replace("{insurer}", insurer)
}

/// The prefix of every topic (and consumer group) that belongs to `insurer` alone.
pub fn insurer_prefix(insurer: &str) -> String {
    format!("insurer.{insurer}.")
}

#[derive(Debug, Clone)]
pub struct Catalog {
    compatibility: String,
    entries: Vec<CatalogEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("schemas/catalog.toml is invalid: {0}")]
    Manifest(#[from] toml::de::Error),
    #[error("event {event} is in catalog.toml but events/{event}.avsc is missing")]
    MissingSchema { event: String },
    #[error("{file} is not valid JSON: {source}")]
    Json {
        file: String,
        source: serde_json::Error,
    },
    #[error("{file} must be a named Avro record with a \"name\"")]
    Unnamed { file: String },
    #[error("schema of {event} is not valid Avro: {source}")]
    Avro {
        event: String,
        source: Box<apache_avro::Error>,
    },
    #[error("events/{event}.avsc defines {found}, but the catalog entry is named {event}")]
    NameMismatch { event: String, found: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default = "default_compatibility")]
    compatibility: String,
    event: Vec<ManifestEvent>,
}

fn default_compatibility() -> String {
    "FULL_TRANSITIVE".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEvent {
    name: String,
    topic: String,
    subject: String,
    #[serde(default)]
    producers: Vec<String>,
    #[serde(default)]
    consumers: Vec<String>,
}

macro_rules! embedded_sources {
    ($($path:literal),+ $(,)?) => {
        &[$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/", $path))),)+]
    };
}

/// The `schemas/` tree compiled into the binary. A test checks it lists every file on disk.
pub const EMBEDDED_SOURCES: &[(&str, &str)] = embedded_sources!(
    "catalog.toml",
    "common/CodedConcept.avsc",
    "common/Coverage.avsc",
    "common/Envelope.avsc",
    "common/InstitutionRef.avsc",
    "common/Observation.avsc",
    "common/PractitionerRef.avsc",
    "common/Quantity.avsc",
    "events/CheckupCompleted.avsc",
    "events/ClaimAdjudicated.avsc",
    "events/ClaimEvidence.avsc",
    "events/ClaimSubmitted.avsc",
    "events/ConsentChanged.avsc",
    "events/LabResultReported.avsc",
    "events/MedicationAlert.avsc",
    "events/PatientDataAccessed.avsc",
    "events/PatientLinked.avsc",
    "events/PrescriptionCancelled.avsc",
    "events/PrescriptionClaimed.avsc",
    "events/PrescriptionDispensed.avsc",
    "events/PrescriptionIssued.avsc",
    "events/ResearchRecord.avsc",
    "events/ResearchReleased.avsc",
);

static EMBEDDED: LazyLock<Catalog> = LazyLock::new(|| {
    let sources: Vec<(String, String)> = EMBEDDED_SOURCES
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect();
    // The embedded files are part of the build, not input: the test suite loads them, so a
    // broken schema fails CI long before any binary runs.
    Catalog::from_sources(&sources).expect("the embedded schemas/ catalog is valid")
});

impl Catalog {
    /// The catalog this binary was built with.
    pub fn embedded() -> &'static Catalog {
        &EMBEDDED
    }

    /// Loads a `schemas/` directory from disk, e.g. a working tree under review.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let mut sources = vec![("catalog.toml".to_owned(), read(&dir.join("catalog.toml"))?)];
        for sub in ["common", "events"] {
            let sub_dir = dir.join(sub);
            let listing = std::fs::read_dir(&sub_dir).map_err(|source| CatalogError::Io {
                path: sub_dir.display().to_string(),
                source,
            })?;
            for entry in listing {
                let path = entry
                    .map_err(|source| CatalogError::Io {
                        path: sub_dir.display().to_string(),
                        source,
                    })?
                    .path();
                if path.extension().is_some_and(|e| e == "avsc") {
                    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
                    sources.push((format!("{sub}/{file_name}"), read(&path)?));
                }
            }
        }
        Catalog::from_sources(&sources)
    }

    /// Builds a catalog from `(path relative to schemas/, contents)` pairs.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Catalog, CatalogError> {
        let source = |path: &str| {
            sources
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, s)| s.as_str())
        };
        let manifest: Manifest = toml::from_str(source("catalog.toml").unwrap_or_default())?;
        let shared = shared_types(sources)?;

        let mut entries = Vec::with_capacity(manifest.event.len());
        for decl in manifest.event {
            let file = format!("events/{}.avsc", decl.name);
            let text = source(&file).ok_or_else(|| CatalogError::MissingSchema {
                event: decl.name.clone(),
            })?;
            entries.push(build_entry(decl, &file, text, &shared)?);
        }
        Ok(Catalog {
            compatibility: manifest.compatibility,
            entries,
        })
    }

    /// The registry compatibility level every subject of this catalog is held to.
    pub fn compatibility(&self) -> &str {
        &self.compatibility
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    pub fn entry(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn by_full_name(&self, full_name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.full_name == full_name)
    }

    pub fn by_subject(&self, subject: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.subject == subject)
    }

    /// Distinct shared topics, in catalog order (not the per-insurer or per-project ones: see
    /// [`insurer_topic`], [`research_topic`]).
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !e.is_per_recipient() && !topics.contains(&e.topic.as_str()) {
                topics.push(&e.topic);
            }
        }
        topics
    }
}

fn read(path: &Path) -> Result<String, CatalogError> {
    std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn parse_json(file: &str, text: &str) -> Result<Json, CatalogError> {
    serde_json::from_str(text).map_err(|source| CatalogError::Json {
        file: file.to_owned(),
        source,
    })
}

/// Full name of a named type declared at the top of a schema file.
fn declared_full_name(file: &str, json: &Json) -> Result<String, CatalogError> {
    let unnamed = || CatalogError::Unnamed {
        file: file.to_owned(),
    };
    let name = json
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(unnamed)?;
    Ok(match json.get("namespace").and_then(Json::as_str) {
        Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
        _ => name.to_owned(),
    })
}

fn shared_types(sources: &[(String, String)]) -> Result<HashMap<String, Json>, CatalogError> {
    let mut shared = HashMap::new();
    for (path, text) in sources.iter().filter(|(p, _)| p.starts_with("common/")) {
        let json = parse_json(path, text)?;
        shared.insert(declared_full_name(path, &json)?, json);
    }
    Ok(shared)
}

fn build_entry(
    decl: ManifestEvent,
    file: &str,
    text: &str,
    shared: &HashMap<String, Json>,
) -> Result<CatalogEntry, CatalogError> {
    let mut json = parse_json(file, text)?;
    let full_name = declared_full_name(file, &json)?;
    let record_name = full_name.rsplit('.').next().unwrap_or_default();
    if record_name != decl.name {
        return Err(CatalogError::NameMismatch {
            event: decl.name,
            found: full_name,
        });
    }
    inline_shared_types(&mut json, shared, &mut HashSet::new());
    let schema_json = json.to_string();
    let schema = Schema::parse_str(&schema_json).map_err(|source| CatalogError::Avro {
        event: decl.name.clone(),
        source: Box::new(source),
    })?;
    Ok(CatalogEntry {
        doc: json.get("doc").and_then(Json::as_str).map(str::to_owned),
        name: decl.name,
        full_name,
        topic: decl.topic,
        subject: decl.subject,
        producers: decl.producers,
        consumers: decl.consumers,
        schema_json,
        schema,
    })
}

/// Replaces the first reference to each shared type with its definition, walking the schema in
/// the order Avro parsers do, so later references by name resolve to that definition.
fn inline_shared_types(
    node: &mut Json,
    shared: &HashMap<String, Json>,
    defined: &mut HashSet<String>,
) {
    match node {
        Json::String(name) => {
            if let Some(definition) = shared.get(name.as_str())
                && defined.insert(name.clone())
            {
                let mut definition = definition.clone();
                inline_shared_types(&mut definition, shared, defined);
                *node = definition;
            }
        }
        Json::Array(union) => {
            for branch in union {
                inline_shared_types(branch, shared, defined);
            }
        }
        Json::Object(map) => {
            for key in ["type", "items", "values"] {
                if let Some(child) = map.get_mut(key) {
                    inline_shared_types(child, shared, defined);
                }
            }
            if let Some(Json::Array(fields)) = map.get_mut("fields") {
                for field in fields {
                    inline_shared_types(field, shared, defined);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_has_one_entry_per_rust_event_type() {
        let names: Vec<&str> = Catalog::embedded()
            .entries()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, crate::Event::NAMES);
    }

    #[test]
    fn shared_types_are_defined_once_then_referenced_by_name() {
        let entry = Catalog::embedded().entry("PrescriptionIssued").unwrap();
        let json = &entry.schema_json;
        assert_eq!(
            json.matches("\"name\":\"CodedConcept\"").count(),
            1,
            "{json}"
        );
        assert!(
            json.contains("\"items\":\"hixbus.common.CodedConcept\""),
            "{json}"
        );
        assert_eq!(entry.topic, "prescriptions");
    }

    #[test]
    fn a_missing_event_file_is_reported_by_name() {
        let sources = vec![(
            "catalog.toml".to_owned(),
            "[[event]]\nname = \"Nope\"\ntopic = \"t\"\nsubject = \"t-value\"\n".to_owned(),
        )];
        let err = Catalog::from_sources(&sources).unwrap_err();
        assert!(matches!(err, CatalogError::MissingSchema { ref event } if event == "Nope"));
    }

    #[test]
    fn an_unknown_type_reference_is_an_avro_error() {
        let sources = vec![
            (
                "catalog.toml".to_owned(),
                "[[event]]\nname = \"E\"\ntopic = \"t\"\nsubject = \"t-value\"\n".to_owned(),
            ),
            (
                "events/E.avsc".to_owned(),
                r#"{"type":"record","name":"E","fields":[{"name":"a","type":"hixbus.common.Missing"}]}"#
                    .to_owned(),
            ),
        ];
        assert!(matches!(
            Catalog::from_sources(&sources),
            Err(CatalogError::Avro { .. })
        ));
    }
}
