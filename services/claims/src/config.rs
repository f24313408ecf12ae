//! What a deployment sets: `hixbus serve claims --config FILE` and `HIXBUS_…` variables
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
    /// `postgres://…` or `sqlite://file.db`: the claims, decisions and the audit log.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
    /// A directory with `drug-prices.csv` and `dispensing-fees.toml` (docs/claims.md); absent:
    /// the built-in tables.
    #[serde(default)]
    pub tariffs: Option<PathBuf>,
}

/// The port after the insurer feed's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8095))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            bus: BusSettings::default(),
            tariffs: None,
        }
    }
}
