//! What a deployment sets: `hixbus serve medication-safety --config FILE` and `HIXBUS_…`
//! variables (docs/operations.md). The check keeps no tables: its state is rebuilt from the
//! topics at every start.

use std::net::SocketAddr;

use hixbus_service::BusSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where `/health` and `/ready` answer.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub bus: BusSettings,
}

/// The port after the pharmacy service's.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8092))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            bus: BusSettings::default(),
        }
    }
}
