//! What a deployment sets: `hixbus serve clinic-gateway --config FILE` and `HIXBUS_…`
//! variables (docs/operations.md).

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
    /// `postgres://…` or `sqlite://file.db`.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    /// `ID:HEX`, the secret access codes are digested with (shared with the pharmacy service).
    #[serde(default)]
    pub access_code_key: Option<SecretString>,
    /// Earlier keys, still accepted after a rotation.
    #[serde(default, deserialize_with = "comma_list")]
    pub access_code_previous_keys: Vec<SecretString>,
    #[serde(default)]
    pub bus: BusSettings,
}

/// Where the gateway listens unless told otherwise (the pharmacy takes the next port).
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
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
