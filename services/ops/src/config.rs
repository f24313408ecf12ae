//! What a deployment sets: `hixbus serve ops --config FILE` and `HIXBUS_…` variables
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
    /// `postgres://…` or `sqlite://file.db`: redrives and the audit log of operators' reads.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// The organizations file: operators sign in with their keys.
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
    /// Consumer groups to report besides those the cluster lists (a broker without ListGroups,
    /// such as librdkafka's mock cluster, lists none): comma-separated.
    #[serde(default)]
    pub groups: String,
    /// The services whose `/ready` the console shows: `name=url` pairs, comma-separated.
    #[serde(default)]
    pub health_checks: String,
    /// Seconds between two looks at the cluster, the registry and the services (1–300).
    #[serde(default = "default_sample_secs")]
    pub sample_secs: u64,
}

pub fn default_sample_secs() -> u64 {
    10
}

/// The port after the research export's (8098 is `hixbus up`'s demo sign-in provider).
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8100))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            organizations: None,
            bus: BusSettings::default(),
            groups: String::new(),
            health_checks: String::new(),
            sample_secs: default_sample_secs(),
        }
    }
}

impl Config {
    /// The configured groups, without blanks.
    pub fn groups(&self) -> Vec<String> {
        self.groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The configured health checks as (name, base URL).
    pub fn health_checks(&self) -> Result<Vec<(String, url::Url)>, String> {
        self.health_checks
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|pair| {
                let (name, url) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("health_checks: {pair:?} is not name=url"))?;
                let url = url::Url::parse(url.trim())
                    .map_err(|e| format!("health_checks: {name}: {url:?}: {e}"))?;
                Ok((name.trim().to_owned(), url))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_are_name_url_pairs_and_a_bad_one_is_named() {
        let config = Config {
            health_checks: "pharmacy=http://127.0.0.1:8091, web=http://127.0.0.1:8080/".into(),
            ..Config::default()
        };
        let checks = config.health_checks().unwrap();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].0, "pharmacy");
        assert_eq!(checks[1].1.as_str(), "http://127.0.0.1:8080/");
        let bad = Config {
            health_checks: "pharmacy".into(),
            ..Config::default()
        };
        assert!(bad.health_checks().unwrap_err().contains("pharmacy"));
    }

    #[test]
    fn groups_skip_blanks() {
        let config = Config {
            groups: " hixbus-pharmacy, ,hixbus-claims".into(),
            ..Config::default()
        };
        assert_eq!(config.groups(), ["hixbus-pharmacy", "hixbus-claims"]);
    }
}
