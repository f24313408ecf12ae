//! The registry's vocabulary, parsed from what clients send.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::RegistryError;

/// A subject name: any non-empty text without control characters, as in Confluent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    pub fn parse(raw: &str) -> Result<Self, RegistryError> {
        if raw.is_empty() || raw.chars().any(char::is_control) || raw.len() > 1024 {
            return Err(RegistryError::InvalidSubject(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version in a path: a number from 1 to 2^31-1, or `latest` (also spelled `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i64),
}

impl VersionSpec {
    pub fn parse(raw: &str) -> Result<Self, RegistryError> {
        if raw == "latest" || raw == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match raw.parse::<i64>() {
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(raw.to_owned())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatibilityLevel {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether new schemas are checked against every earlier version or only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    /// New readers must read old data.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Old readers must read new data.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl FromStr for CompatibilityLevel {
    type Err = RegistryError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(match raw.to_ascii_uppercase().as_str() {
            "NONE" => CompatibilityLevel::None,
            "BACKWARD" => CompatibilityLevel::Backward,
            "BACKWARD_TRANSITIVE" => CompatibilityLevel::BackwardTransitive,
            "FORWARD" => CompatibilityLevel::Forward,
            "FORWARD_TRANSITIVE" => CompatibilityLevel::ForwardTransitive,
            "FULL" => CompatibilityLevel::Full,
            "FULL_TRANSITIVE" => CompatibilityLevel::FullTransitive,
            _ => return Err(RegistryError::InvalidCompatibilityLevel),
        })
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a registry (or one subject) lets clients do, as Confluent's `/mode`: writable; reads
/// only (a registry being migrated away from, or frozen for an audit); or taking schemas with the
/// ids and versions they had elsewhere (a migration into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    Import,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }
}

impl FromStr for Mode {
    type Err = RegistryError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(match raw.to_ascii_uppercase().as_str() {
            "READWRITE" => Mode::ReadWrite,
            "READONLY" => Mode::ReadOnly,
            "IMPORT" => Mode::Import,
            _ => return Err(RegistryError::InvalidMode(raw.to_owned())),
        })
    }
}

/// Schema types this registry accepts. Confluent also has JSON and PROTOBUF; hixbus is Avro-only
/// and says so instead of storing schemas it cannot check.
pub const SCHEMA_TYPES: &[&str] = &["AVRO"];

/// How many schemas one registration may pull in through its references, transitively: bounds
/// the work a client can ask for (each is a query and a parse).
pub const MAX_REFERENCED_SCHEMAS: usize = 256;

/// A schema's use of a named type defined under another subject's version (Confluent's
/// `references`). For Avro, `name` is the full name the referencing schema uses for the type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A schema that parsed as Avro, in the canonical text the registry stores and returns.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    /// Self-contained: every referenced type is written out where first used, so compatibility
    /// is checked on the whole shape and not only on type names.
    pub schema: Schema,
    /// apache-avro's full JSON rendering (docs, defaults and custom properties kept). Two texts
    /// that differ only in whitespace or key order get the same canonical text, hence the same id.
    /// Referenced types stay names here, as the client wrote them.
    pub canonical: String,
    /// The references, each naming one concrete version.
    pub references: Vec<SchemaReference>,
    /// SHA-256 of `canonical` (and of the references, when there are any: the same text over
    /// other versions of its references is another schema, as in Confluent), hex: the key that
    /// makes ids global and stable.
    pub fingerprint: String,
}

impl ParsedSchema {
    /// Parses `text`; `referenced` are the canonical texts of every schema `references` reach,
    /// transitively (the registry looks them up first).
    pub fn parse(
        text: &str,
        schema_type: Option<&str>,
        references: Vec<SchemaReference>,
        referenced: &[String],
    ) -> Result<Self, RegistryError> {
        if let Some(t) = schema_type
            && !t.eq_ignore_ascii_case("AVRO")
        {
            return Err(RegistryError::InvalidSchema(format!(
                "schema type {t} is not supported; this registry stores AVRO schemas only"
            )));
        }
        if text.trim().is_empty() {
            return Err(RegistryError::InvalidSchema(
                "the schema is empty".to_owned(),
            ));
        }
        let invalid = |e: apache_avro::Error| RegistryError::InvalidSchema(format!("{e}"));
        let (canonical, schema) = if referenced.is_empty() {
            let schema = Schema::parse_str(text).map_err(invalid)?;
            (render(&schema)?, schema)
        } else {
            let (main, schemata) =
                Schema::parse_str_with_list(text, referenced).map_err(invalid)?;
            let canonical = render(&main)?;
            let mut whole = main;
            whole.denormalize(&schemata).map_err(invalid)?;
            (canonical, whole)
        };
        let mut digest = Sha256::new();
        digest.update(canonical.as_bytes());
        if !references.is_empty() {
            // A separator no JSON text contains, then the references in the order given.
            digest.update([0u8]);
            digest.update(
                serde_json::to_string(&references)
                    .map_err(|e| RegistryError::InvalidSchema(format!("{e}")))?
                    .as_bytes(),
            );
        }
        Ok(Self {
            schema,
            canonical,
            references,
            fingerprint: hex(&digest.finalize()),
        })
    }
}

fn render(schema: &Schema) -> Result<String, RegistryError> {
    serde_json::to_string(schema)
        .map_err(|e| RegistryError::InvalidSchema(format!("cannot render schema: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_accept_numbers_and_latest_only() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("7").unwrap(), VersionSpec::Number(7));
        for bad in ["0", "-2", "abc", "2147483648", ""] {
            assert!(VersionSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_text_ignores_whitespace_and_key_order() {
        let a = ParsedSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            None,
            Vec::new(),
            &[],
        )
        .unwrap();
        let b = ParsedSchema::parse(
            "{ \"fields\": [ {\"type\": \"int\", \"name\": \"a\"} ],\n \"name\": \"R\", \"type\": \"record\" }",
            Some("AVRO"),
            Vec::new(),
            &[],
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.canonical, b.canonical);
        // The canonical text parses back to the same canonical text.
        let again = ParsedSchema::parse(&a.canonical, None, Vec::new(), &[]).unwrap();
        assert_eq!(again.canonical, a.canonical);
    }

    #[test]
    fn docs_and_defaults_are_part_of_the_identity() {
        let plain = ParsedSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            None,
            Vec::new(),
            &[],
        )
        .unwrap();
        let with_default = ParsedSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":0}]}"#,
            None,
            Vec::new(),
            &[],
        )
        .unwrap();
        assert_ne!(plain.fingerprint, with_default.fingerprint);
    }

    #[test]
    fn non_avro_and_broken_schemas_are_invalid() {
        assert!(matches!(
            ParsedSchema::parse("{}", Some("PROTOBUF"), Vec::new(), &[]),
            Err(RegistryError::InvalidSchema(m)) if m.contains("AVRO")
        ));
        assert!(ParsedSchema::parse(r#"{"type":"record"}"#, None, Vec::new(), &[]).is_err());
        assert!(ParsedSchema::parse("not json", None, Vec::new(), &[]).is_err());
        assert!(ParsedSchema::parse("", None, Vec::new(), &[]).is_err());
    }

    const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"x","fields":[{"name":"street","type":"string"}]}"#;
    const PERSON: &str = r#"{"type":"record","name":"Person","namespace":"x","fields":[{"name":"home","type":"x.Address"}]}"#;

    fn address_ref(version: i64) -> Vec<SchemaReference> {
        vec![SchemaReference {
            name: "x.Address".to_owned(),
            subject: "address".to_owned(),
            version,
        }]
    }

    #[test]
    fn a_reference_stays_a_name_in_the_text_and_is_written_out_in_the_schema() {
        let person =
            ParsedSchema::parse(PERSON, None, address_ref(1), &[ADDRESS.to_owned()]).unwrap();
        assert!(
            person.canonical.contains(r#""type":"x.Address""#),
            "{}",
            person.canonical
        );
        let whole = serde_json::to_string(&person.schema).unwrap();
        assert!(whole.contains("street"), "{whole}");
        // Without what it references, the type is unknown.
        assert!(ParsedSchema::parse(PERSON, None, Vec::new(), &[]).is_err());
    }

    #[test]
    fn the_same_text_over_another_referenced_version_is_another_schema() {
        let v1 = ParsedSchema::parse(PERSON, None, address_ref(1), &[ADDRESS.to_owned()]).unwrap();
        let v2 = ParsedSchema::parse(PERSON, None, address_ref(2), &[ADDRESS.to_owned()]).unwrap();
        assert_eq!(v1.canonical, v2.canonical);
        assert_ne!(v1.fingerprint, v2.fingerprint);
        // A schema without references keeps the fingerprint it always had: its text's alone.
        let plain = ParsedSchema::parse(ADDRESS, None, Vec::new(), &[]).unwrap();
        assert_eq!(
            plain.fingerprint,
            hex(&Sha256::digest(plain.canonical.as_bytes()))
        );
    }
}
