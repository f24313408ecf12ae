//! What a deployment sets: `hixbus serve web --config FILE` and `HIXBUS_…` variables
//! (docs/operations.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The organizations file: sign-in checks an API key against it before any call is made.
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default = "default_clinic_gateway")]
    pub clinic_gateway_url: String,
    #[serde(default = "default_pharmacy")]
    pub pharmacy_url: String,
    #[serde(default = "default_claims")]
    pub claims_url: String,
    #[serde(default = "default_insurer_feed")]
    pub insurer_feed_url: String,
    /// The reference insurer's decisions (`hixbus serve insurer`), for the insurer it decides for.
    #[serde(default = "default_insurer")]
    pub insurer_url: String,
    #[serde(default = "default_patient")]
    pub patient_url: String,
    /// The operator's API (`hixbus serve ops`), for the operator console.
    #[serde(default = "default_ops")]
    pub ops_url: String,
    /// The patients' OpenID Connect provider (its issuer URL). Without it patients cannot sign
    /// in here.
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    /// The client id hixbus is registered under at that provider (the ID tokens' `aud`, as
    /// the patient service checks it).
    #[serde(default = "default_audience")]
    pub oidc_audience: String,
    /// Where browsers reach this service (`https://consoles.example.jp`), for the provider to
    /// send patients back to; absent, the address the browser used.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Served over TLS (directly or behind a terminating proxy): cookies get `Secure` and the
    /// `__Host-` prefix, and pages send `Strict-Transport-Security`.
    #[serde(default)]
    pub secure_cookies: bool,
    /// A session unused this long ends.
    #[serde(default = "default_idle_minutes")]
    pub session_idle_minutes: u64,
    /// A session ends this long after sign-in, however active.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

/// Below the services' ports (8090…): the one address people open.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_ops() -> String {
    "http://127.0.0.1:8100".to_owned()
}

fn default_clinic_gateway() -> String {
    "http://127.0.0.1:8090".to_owned()
}

fn default_pharmacy() -> String {
    "http://127.0.0.1:8091".to_owned()
}

fn default_claims() -> String {
    "http://127.0.0.1:8095".to_owned()
}

fn default_insurer_feed() -> String {
    "http://127.0.0.1:8094".to_owned()
}

fn default_insurer() -> String {
    "http://127.0.0.1:8096".to_owned()
}

fn default_patient() -> String {
    "http://127.0.0.1:8097".to_owned()
}

fn default_audience() -> String {
    "hixbus".to_owned()
}

fn default_idle_minutes() -> u64 {
    30
}

fn default_session_hours() -> u64 {
    12
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            organizations: None,
            clinic_gateway_url: default_clinic_gateway(),
            pharmacy_url: default_pharmacy(),
            claims_url: default_claims(),
            insurer_feed_url: default_insurer_feed(),
            insurer_url: default_insurer(),
            patient_url: default_patient(),
            ops_url: default_ops(),
            oidc_issuer: None,
            oidc_audience: default_audience(),
            public_url: None,
            secure_cookies: false,
            session_idle_minutes: default_idle_minutes(),
            session_hours: default_session_hours(),
        }
    }
}
