//! What a deployment sets: `hixbus serve research --config FILE` and `HIXBUS_…` variables
//! (docs/operations.md, docs/research.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use hixbus_service::BusSettings;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `postgres://…` or `sqlite://file.db`: items waiting for a release, the releases made,
    /// the consent book, the audit log.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
    /// The research projects file (docs/research.md); without one nothing is exported.
    #[serde(default)]
    pub projects: Option<PathBuf>,
    /// The projects' pseudonymization keys (a secrets file: `[[key]] project, id, secret`).
    #[serde(default)]
    pub project_keys: Option<PathBuf>,
    /// A release as soon as this many items of a project wait (10–100,000)…
    #[serde(default = "default_batch_records")]
    pub batch_records: i64,
    /// … or the oldest has waited this many milliseconds (100–3,600,000).
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// The consumer group; another one (with its own database) replays the topics from the
    /// start, e.g. to rebuild the export.
    #[serde(default = "default_group")]
    pub consumer_group: String,
}

pub fn default_group() -> String {
    crate::startup::GROUP.to_owned()
}

pub fn default_batch_records() -> i64 {
    1000
}

pub fn default_batch_wait_ms() -> u64 {
    5000
}

/// The port after the patient record's OpenID demo provider.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8099))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            bus: BusSettings::default(),
            projects: None,
            project_keys: None,
            batch_records: default_batch_records(),
            batch_wait_ms: default_batch_wait_ms(),
            consumer_group: default_group(),
        }
    }
}
