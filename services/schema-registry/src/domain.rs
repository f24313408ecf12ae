//! The registry's vocabulary, parsed from what clients send.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
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

/// A schema that parsed as Avro, in the canonical text the registry stores and returns.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    pub schema: Schema,
    /// apache-avro's full JSON rendering (docs, defaults and custom properties kept). Two texts
    /// that differ only in whitespace or key order get the same canonical text, hence the same id.
    pub canonical: String,
    /// SHA-256 of `canonical`, hex: the key that makes ids global and stable.
    pub fingerprint: String,
}

impl ParsedSchema {
    pub fn parse(
        text: &str,
        schema_type: Option<&str>,
        has_references: bool,
    ) -> Result<Self, RegistryError> {
        if let Some(t) = schema_type
            && !t.eq_ignore_ascii_case("AVRO")
        {
            return Err(RegistryError::InvalidSchema(format!(
                "schema type {t} is not supported; this registry stores AVRO schemas only"
            )));
        }
        if has_references {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported; register self-contained schemas".to_owned(),
            ));
        }
        if text.trim().is_empty() {
            return Err(RegistryError::InvalidSchema(
                "the schema is empty".to_owned(),
            ));
        }
        let schema =
            Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(format!("{e}")))?;
        let canonical = serde_json::to_string(&schema)
            .map_err(|e| RegistryError::InvalidSchema(format!("cannot render schema: {e}")))?;
        let fingerprint = hex(&Sha256::digest(canonical.as_bytes()));
        Ok(Self {
            schema,
            canonical,
            fingerprint,
        })
    }
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
            false,
        )
        .unwrap();
        let b = ParsedSchema::parse(
            "{ \"fields\": [ {\"type\": \"int\", \"name\": \"a\"} ],\n \"name\": \"R\", \"type\": \"record\" }",
            Some("AVRO"),
            false,
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.canonical, b.canonical);
        // The canonical text parses back to the same canonical text.
        let again = ParsedSchema::parse(&a.canonical, None, false).unwrap();
        assert_eq!(again.canonical, a.canonical);
    }

    #[test]
    fn docs_and_defaults_are_part_of_the_identity() {
        let plain = ParsedSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            None,
            false,
        )
        .unwrap();
        let with_default = ParsedSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":0}]}"#,
            None,
            false,
        )
        .unwrap();
        assert_ne!(plain.fingerprint, with_default.fingerprint);
    }

    #[test]
    fn non_avro_and_broken_schemas_are_invalid() {
        assert!(matches!(
            ParsedSchema::parse("{}", Some("PROTOBUF"), false),
            Err(RegistryError::InvalidSchema(m)) if m.contains("AVRO")
        ));
        assert!(ParsedSchema::parse(r#"{"type":"record"}"#, None, false).is_err());
        assert!(ParsedSchema::parse("not json", None, false).is_err());
        assert!(ParsedSchema::parse("", None, false).is_err());
    }
}
