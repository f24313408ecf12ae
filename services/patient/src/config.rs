//! What a deployment sets: `hixbus serve patient --config FILE` and `HIXBUS_…` variables
//! (docs/operations.md, docs/patients.md).

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
    /// `postgres://…` or `sqlite://file.db`: the record, the patients' accounts and the audit log.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file: the institutions that hand patients their enrolment codes.
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
    /// The OpenID Connect issuer whose ID tokens patients sign in with (its `iss`). Absent:
    /// nobody can sign in, and every patient route answers 503 saying so.
    /// The consumer group the record is kept by. To rebuild the record into an empty database,
    /// start with a new name: a new group reads every topic from the beginning.
    #[serde(default = "default_group")]
    pub consumer_group: String,
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    /// The client id hixbus is registered under at that issuer (the tokens' `aud`).
    #[serde(default)]
    pub oidc_audience: Option<String>,
    /// Where the issuer publishes its signing keys; absent: read from its discovery document
    /// (`<issuer>/.well-known/openid-configuration`).
    #[serde(default)]
    pub oidc_jwks_url: Option<String>,
}

/// The port after the reference insurer's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8097))
}

fn default_group() -> String {
    crate::GROUP.to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            bus: BusSettings::default(),
            consumer_group: default_group(),
            oidc_issuer: None,
            oidc_audience: None,
            oidc_jwks_url: None,
        }
    }
}
