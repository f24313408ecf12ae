//! Research projects, declared in a file like the organizations (docs/research.md), and the
//! per-project pseudonymization keys, kept in a separate secrets file.
//!
//! Everything a project may receive is declared: its event types, the fields of its records,
//! its quasi-identifiers. A name the export does not know is refused when the file is read, so
//! a typo can never widen what leaves.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use base64::Engine as _;
use hixbus_access::{Directory, Role};
use hixbus_contracts::ResearchMode;
use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;

/// The event types a project may take records from.
pub const SOURCES: [&str; 4] = [
    "PrescriptionIssued",
    "PrescriptionDispensed",
    "LabResultReported",
    "CheckupCompleted",
];

/// The fields of a released record a project may declare (`ResearchRecord`'s optional fields;
/// `project` and `kind` always travel, as do the record and subject pseudonyms in the envelope).
pub const FIELDS: [&str; 13] = [
    "institution",
    "day",
    "age_band",
    "sex",
    "region",
    "code_system",
    "code",
    "display",
    "value",
    "unit",
    "days_supply",
    "quantity",
    "subject",
];

/// The quasi-identifiers the export can generalize: what someone who knows a patient may
/// know of them and find again in a release.
pub const QUASI_IDENTIFIERS: [&str; 4] = ["age_band", "sex", "region", "institution"];

/// The smallest k a project may declare: k = 1 is no protection at all.
pub const MIN_K: u32 = 2;
/// The default share of a batch that may be suppressed before the batch is held instead.
pub const DEFAULT_MAX_SUPPRESSED_PERCENT: u32 = 10;
/// Shortest pseudonymization key accepted (HMAC-SHA256).
const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ModeName {
    Pseudonymized,
    Anonymized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectEntry {
    id: String,
    researcher: String,
    purpose: String,
    mode: ModeName,
    #[serde(default = "default_k")]
    k: u32,
    events: Vec<String>,
    fields: Vec<String>,
    #[serde(default = "default_quasi_identifiers")]
    quasi_identifiers: Vec<String>,
    /// Only patients who opted in (a research consent granted), not merely those who did not
    /// opt out.
    #[serde(default)]
    opt_in: bool,
    #[serde(default = "default_max_suppressed")]
    max_suppressed_percent: u32,
}

fn default_k() -> u32 {
    5
}

fn default_quasi_identifiers() -> Vec<String> {
    vec!["age_band".to_owned(), "region".to_owned()]
}

fn default_max_suppressed() -> u32 {
    DEFAULT_MAX_SUPPRESSED_PERCENT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectsFile {
    #[serde(default, rename = "project")]
    projects: Vec<ProjectEntry>,
}

/// One research project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: String,
    /// The researcher organization its records go to.
    pub researcher: String,
    pub purpose: String,
    pub mode: ResearchMode,
    pub k: u32,
    pub events: BTreeSet<String>,
    pub fields: BTreeSet<String>,
    pub quasi_identifiers: Vec<String>,
    pub opt_in: bool,
    pub max_suppressed_percent: u32,
}

impl Project {
    pub fn takes(&self, event: &str) -> bool {
        self.events.contains(event)
    }

    pub fn has(&self, field: &str) -> bool {
        self.fields.contains(field)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: String,
        source: toml::de::Error,
    },
    #[error("research project {project}: {problem}")]
    Invalid { project: String, problem: String },
}

fn invalid(project: &str, problem: impl Into<String>) -> ProjectsError {
    ProjectsError::Invalid {
        project: project.to_owned(),
        problem: problem.into(),
    }
}

/// The projects `text` declares, each checked against what the export knows and against the
/// organizations (its researcher must be one, with the researcher role).
pub fn parse(text: &str, path: &str, directory: &Directory) -> Result<Vec<Project>, ProjectsError> {
    let file: ProjectsFile = toml::from_str(text).map_err(|source| ProjectsError::Toml {
        path: path.to_owned(),
        source,
    })?;
    let mut projects: Vec<Project> = Vec::new();
    for p in file.projects {
        let id_ok = !p.id.is_empty()
            && p.id.len() <= 64
            && p.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(invalid(
                &p.id,
                "the id is 1–64 characters of a-z, 0-9 and - (it names a topic)",
            ));
        }
        if projects.iter().any(|q| q.id == p.id) {
            return Err(invalid(&p.id, "declared twice"));
        }
        match directory.get(&p.researcher) {
            Some(org) if org.role == Role::Researcher => {}
            Some(_) => {
                return Err(invalid(
                    &p.id,
                    format!("{} is not a researcher organization", p.researcher),
                ));
            }
            None => {
                return Err(invalid(&p.id, format!("no organization {}", p.researcher)));
            }
        }
        if p.purpose.trim().is_empty() {
            return Err(invalid(&p.id, "state the purpose"));
        }
        if p.k < MIN_K {
            return Err(invalid(&p.id, format!("k must be at least {MIN_K}")));
        }
        if p.max_suppressed_percent > 50 {
            return Err(invalid(&p.id, "max_suppressed_percent is at most 50"));
        }
        let unknown = |names: &[String], known: &[&str]| -> Vec<String> {
            names
                .iter()
                .filter(|n| !known.contains(&n.as_str()))
                .cloned()
                .collect()
        };
        for (what, names, known) in [
            ("event types", &p.events, &SOURCES[..]),
            ("fields", &p.fields, &FIELDS[..]),
            (
                "quasi-identifiers",
                &p.quasi_identifiers,
                &QUASI_IDENTIFIERS[..],
            ),
        ] {
            let bad = unknown(names, known);
            if !bad.is_empty() {
                return Err(invalid(
                    &p.id,
                    format!("unknown {what} {bad:?}; known: {known:?}"),
                ));
            }
        }
        if p.events.is_empty() {
            return Err(invalid(&p.id, "no event types"));
        }
        // A quasi-identifier the records do not carry protects nothing and means nothing; and
        // one they carry must be checked, or it would leave unprotected.
        if let Some(q) = p.quasi_identifiers.iter().find(|q| !p.fields.contains(q)) {
            return Err(invalid(
                &p.id,
                format!("quasi-identifier {q} is not among its fields"),
            ));
        }
        if let Some(f) = p
            .fields
            .iter()
            .find(|f| QUASI_IDENTIFIERS.contains(&f.as_str()) && !p.quasi_identifiers.contains(f))
        {
            return Err(invalid(
                &p.id,
                format!("field {f} is a quasi-identifier: list it in quasi_identifiers"),
            ));
        }
        let mode = match p.mode {
            ModeName::Pseudonymized => ResearchMode::Pseudonymized,
            ModeName::Anonymized => ResearchMode::Anonymized,
        };
        if mode == ResearchMode::Anonymized && p.fields.iter().any(|f| f == "subject") {
            return Err(invalid(
                &p.id,
                "an anonymized project receives no subject pseudonym that links its releases",
            ));
        }
        projects.push(Project {
            id: p.id,
            researcher: p.researcher,
            purpose: p.purpose,
            mode,
            k: p.k,
            events: p.events.into_iter().collect(),
            fields: p.fields.into_iter().collect(),
            quasi_identifiers: p.quasi_identifiers,
            opt_in: p.opt_in,
            max_suppressed_percent: p.max_suppressed_percent,
        });
    }
    Ok(projects)
}

/// The projects file at `path`.
pub fn load(path: &Path, directory: &Directory) -> Result<Vec<Project>, ProjectsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ProjectsError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown, directory)
}

/// One project's pseudonymization key.
#[derive(Clone)]
pub struct ProjectKey {
    pub id: String,
    secret: SecretSlice<u8>,
}

impl ProjectKey {
    pub fn new(id: &str, secret: Vec<u8>) -> Self {
        Self {
            id: id.to_owned(),
            secret: secret.into(),
        }
    }

    pub fn secret(&self) -> &[u8] {
        self.secret.expose_secret()
    }
}

impl std::fmt::Debug for ProjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    project: String,
    id: String,
    /// Base64 of at least 32 random bytes.
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntry>,
}

/// Each project's current key: the last one the file lists for it. Rotating is adding a new
/// key after the old: every pseudonym of the project changes with it (docs/research.md).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    current: HashMap<String, ProjectKey>,
}

impl Keys {
    pub fn parse(text: &str, path: &str) -> Result<Keys, ProjectsError> {
        let file: KeysFile = toml::from_str(text).map_err(|source| ProjectsError::Toml {
            path: path.to_owned(),
            source,
        })?;
        let mut current = HashMap::new();
        for k in file.keys {
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .map_err(|_| invalid(&k.project, format!("key {} is not base64", k.id)))?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(invalid(
                    &k.project,
                    format!("key {} is shorter than {MIN_KEY_BYTES} bytes", k.id),
                ));
            }
            current.insert(k.project.clone(), ProjectKey::new(&k.id, secret));
        }
        Ok(Keys { current })
    }

    pub fn load(path: &Path) -> Result<Keys, ProjectsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProjectsError::Io {
            path: shown.clone(),
            source,
        })?;
        Keys::parse(&text, &shown)
    }

    /// The project's current key; `None` fails closed: nothing of the project is released.
    pub fn of(&self, project: &str) -> Option<&ProjectKey> {
        self.current.get(project)
    }

    /// A key for `project` (tests, `hixbus up`).
    pub fn insert(&mut self, project: &str, key: ProjectKey) {
        self.current.insert(project.to_owned(), key);
    }

    /// A keys file with a fresh random key for each of `projects` (`hixbus up`'s demo).
    pub fn generate_text(projects: &[&str], id: &str) -> String {
        let mut text = String::new();
        for p in projects {
            let secret: [u8; 32] = rand_bytes();
            text.push_str(&format!(
                "[[key]]\nproject = \"{p}\"\nid = \"{id}\"\nsecret = \"{}\"\n\n",
                base64::engine::general_purpose::STANDARD.encode(secret)
            ));
        }
        text
    }
}

/// 32 bytes from the OS's random source, through two v4 UUIDs (already a dependency).
fn rand_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    out[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORGS: &str = r#"
[[organization]]
id = "univ-research"
role = "researcher"
name = "Research"

[[organization]]
id = "clinic-a"
role = "clinic"
name = "Clinic"
"#;

    fn project(extra: &str) -> String {
        format!(
            "[[project]]\nid = \"dm\"\nresearcher = \"univ-research\"\npurpose = \"diabetes outcomes\"\nmode = \"pseudonymized\"\nevents = [\"LabResultReported\"]\nfields = [\"subject\", \"age_band\", \"region\", \"code\", \"value\"]\n{extra}"
        )
    }

    #[test]
    fn a_project_declares_what_it_receives_and_anything_unknown_is_refused() {
        let directory = Directory::from_toml(ORGS).unwrap();
        let parsed = parse(&project(""), "p", &directory).unwrap();
        assert_eq!(parsed[0].k, 5);
        assert_eq!(parsed[0].quasi_identifiers, ["age_band", "region"]);
        for (extra, expected) in [
            ("k = 1", "k must be at least 2"),
            (
                "quasi_identifiers = [\"postcode\"]",
                "unknown quasi-identifiers",
            ),
            (
                "quasi_identifiers = [\"institution\"]",
                "not among its fields",
            ),
            (
                "quasi_identifiers = [\"age_band\"]",
                "field region is a quasi-identifier",
            ),
            ("colour = \"red\"", "unknown field"),
        ] {
            let e = parse(&project(extra), "p", &directory)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        let bad_field = project("").replace("\"value\"", "\"name\"");
        let e = parse(&bad_field, "p", &directory).unwrap_err().to_string();
        assert!(e.contains("unknown fields [\"name\"]"), "{e}");
        let clinic = project("").replace("univ-research", "clinic-a");
        let e = parse(&clinic, "p", &directory).unwrap_err().to_string();
        assert!(e.contains("not a researcher"), "{e}");
        let anonymized = project("").replace("pseudonymized", "anonymized");
        assert!(parse(&anonymized, "p", &directory).is_err());
    }

    #[test]
    fn the_last_key_of_a_project_is_current_and_short_keys_are_refused() {
        let text = format!(
            "{}{}",
            Keys::generate_text(&["dm"], "2026-10"),
            Keys::generate_text(&["dm"], "2026-11")
        );
        let keys = Keys::parse(&text, "k").unwrap();
        assert_eq!(keys.of("dm").unwrap().id, "2026-11");
        assert!(keys.of("other").is_none());
        let short = "[[key]]\nproject = \"dm\"\nid = \"x\"\nsecret = \"c2hvcnQ=\"\n";
        assert!(Keys::parse(short, "k").is_err());
        assert!(!format!("{:?}", keys).contains(&text[40..60]));
    }
}
