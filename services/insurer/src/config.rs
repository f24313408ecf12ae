//! What a deployment sets: `hixbus serve insurer --config FILE` and `HIXBUS_…` variables
//! (docs/operations.md, docs/claims.md).

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
    /// `postgres://…` or `sqlite://file.db`: evidence, decisions and the audit log.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
    /// The insurer this service decides for (an organization id with the insurer role).
    #[serde(default)]
    pub insurer: Option<String>,
    /// The member roster: CSV, or a FHIR Bundle of Coverage (`.json`). Absent: no members,
    /// and every claim is returned as not a member.
    #[serde(default)]
    pub roster: Option<PathBuf>,
    /// A directory with `drug-prices.csv` and `dispensing-fees.toml`; absent: built in.
    #[serde(default)]
    pub tariffs: Option<PathBuf>,
}

/// The port after the claims service's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8096))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            bus: BusSettings::default(),
            insurer: None,
            roster: None,
            tariffs: None,
        }
    }
}
