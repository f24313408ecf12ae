//! What a deployment sets: `hixbus serve lab-gateway --config FILE` and `HIXBUS_…` variables
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
    /// `postgres://…` or `sqlite://file.db`: the audit log of what each lab sent.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file (ids, roles, API key digests).
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    /// Where HL7 v2 over MLLP is accepted (2575 is MLLP's usual port); none: HTTP only.
    #[serde(default)]
    pub mllp_listen: Option<SocketAddr>,
    /// Who sends over MLLP from where, `ORGANIZATION=ADDRESS` (MLLP has no authentication of
    /// its own: docs/labs.md).
    #[serde(default, deserialize_with = "comma_list")]
    pub mllp_senders: Vec<String>,
    /// How long one MLLP message may take to arrive once its frame began (seconds).
    #[serde(default = "default_frame_timeout")]
    pub mllp_frame_timeout_secs: u64,
    #[serde(default)]
    pub bus: BusSettings,
}

fn default_frame_timeout() -> u64 {
    crate::mllp::FRAME.as_secs()
}

/// The port after the medication-safety check's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8093))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            mllp_listen: None,
            mllp_senders: Vec::new(),
            mllp_frame_timeout_secs: default_frame_timeout(),
            bus: BusSettings::default(),
        }
    }
}
