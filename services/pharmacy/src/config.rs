//! What a deployment sets: `hixbus serve pharmacy --config FILE` and `HIXBUS_…` variables
//! (docs/operations.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use hixbus_service::BusSettings;
use hixbus_service::config::comma_list;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `postgres://…` (several replicas share it) or `sqlite://file.db`.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    /// `ID:HEX`: the clinic gateway's key, to find a prescription by the code a patient shows.
    #[serde(default)]
    pub access_code_key: Option<SecretString>,
    /// Earlier keys, still accepted after a rotation.
    #[serde(default, deserialize_with = "comma_list")]
    pub access_code_previous_keys: Vec<SecretString>,
    #[serde(default)]
    pub bus: BusSettings,
}

/// The port after the clinic gateway's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8091))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            access_code_key: None,
            access_code_previous_keys: Vec::new(),
            bus: BusSettings::default(),
        }
    }
}
