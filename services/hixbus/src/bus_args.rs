//! Connection settings shared by every command that talks to the bus.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use hixbus_bus::KafkaConfig;
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use hixbus_contracts::registry::RegistryClient;

pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:8081";

#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// Kafka bootstrap servers (host:port,…).
    #[arg(
        long,
        env = "HIXBUS_BOOTSTRAP_SERVERS",
        default_value = DEFAULT_BOOTSTRAP
    )]
    pub bootstrap_servers: String,
    /// Confluent-compatible schema registry.
    #[arg(
        long,
        env = "HIXBUS_REGISTRY_URL",
        default_value = DEFAULT_REGISTRY_URL
    )]
    pub registry_url: String,
    #[command(flatten)]
    pub registry_access: RegistryAccess,
    /// Extra librdkafka setting, KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub kafka_options: Vec<(String, String)>,
}

impl BusArgs {
    pub fn kafka(&self, client_id: &str) -> KafkaConfig {
        kafka_config(&self.bootstrap_servers, client_id, &self.kafka_options)
    }

    pub fn codec(&self, strategy: SchemaIdStrategy) -> anyhow::Result<Arc<Codec>> {
        let registry = registry_client(&self.registry_url, &self.registry_access)?;
        Ok(Arc::new(Codec::new(registry, strategy)))
    }
}

/// An organization's id and API key for the registry. Never printed.
#[derive(Clone)]
pub struct RegistryCredentials {
    org: String,
    key: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryCredentials({}:***)", self.org)
    }
}

pub fn parse_credentials(text: &str) -> Result<RegistryCredentials, String> {
    match text.split_once(':') {
        Some((org, key)) if !org.is_empty() && !key.is_empty() => Ok(RegistryCredentials {
            org: org.to_owned(),
            key: key.to_owned(),
        }),
        _ => Err("expected ORGANIZATION:API_KEY".to_owned()),
    }
}

/// How to reach a registry that requires credentials or TLS with a private CA.
#[derive(Debug, Clone, Args)]
pub struct RegistryAccess {
    /// Credentials for a registry that requires them, ORGANIZATION:API_KEY (sent as HTTP Basic,
    /// as Confluent's clients do).
    #[arg(long, env = "HIXBUS_REGISTRY_AUTH", value_name = "ORG:KEY", value_parser = parse_credentials)]
    pub registry_auth: Option<RegistryCredentials>,
    /// A PEM certificate to trust for an https:// registry (a private CA or a self-signed
    /// certificate); public CAs are trusted as the system trusts them.
    #[arg(long, env = "HIXBUS_REGISTRY_CA", value_name = "PEM_FILE")]
    pub registry_ca: Option<PathBuf>,
}

/// A client for the registry at `url`, authenticating and trusting as `access` says.
pub fn registry_client(url: &str, access: &RegistryAccess) -> anyhow::Result<RegistryClient> {
    let mut client = RegistryClient::new(url).with_context(|| format!("registry URL {url}"))?;
    if let Some(path) = &access.registry_ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        client = client
            .with_root_certificate(&pem)
            .with_context(|| format!("certificate {}", path.display()))?;
    }
    Ok(match &access.registry_auth {
        Some(c) => client.with_basic_auth(&c.org, &c.key),
        None => client,
    })
}

pub fn kafka_config(bootstrap: &str, client_id: &str, options: &[(String, String)]) -> KafkaConfig {
    options.iter().fold(
        KafkaConfig::new(bootstrap).with_client_id(client_id),
        |config, (k, v)| config.with_option(k, v),
    )
}

pub fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
