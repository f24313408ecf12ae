//! What a deployment sets: `hixbus serve insurer-feed --config FILE` and `HIXBUS_…` variables
//! (docs/operations.md).

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
    /// `postgres://…` or `sqlite://file.db`: the feeds and the audit log.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
    /// Seconds a dispensing claim waits for its dispensing to reach the insurer first (1–60).
    #[serde(default = "default_evidence_wait")]
    pub evidence_wait_secs: u64,
}

pub fn default_evidence_wait() -> u64 {
    10
}

/// The port after the lab gateway's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8094))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            bus: BusSettings::default(),
            evidence_wait_secs: default_evidence_wait(),
        }
    }
}
