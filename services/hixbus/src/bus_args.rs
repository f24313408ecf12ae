//! Connection settings shared by every command that talks to the bus.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use hixbus_bus::KafkaConfig;
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use hixbus_contracts::registry::RegistryClient;
use hixbus_service::BusSettings;
use secrecy::{ExposeSecret, SecretString};

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

/// An organization's id and API key for the registry. The key is never printed.
#[derive(Debug, Clone)]
pub struct RegistryCredentials {
    pub(crate) org: String,
    pub(crate) key: SecretString,
}

pub fn parse_credentials(text: &str) -> Result<RegistryCredentials, String> {
    match text.split_once(':') {
        Some((org, key)) if !org.is_empty() && !key.is_empty() => Ok(RegistryCredentials {
            org: org.to_owned(),
            key: key.into(),
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

/// The settings a service reads from its configuration, from these flags.
fn settings(url: &str, access: &RegistryAccess) -> BusSettings {
    BusSettings {
        registry_url: url.to_owned(),
        registry_auth: access
            .registry_auth
            .as_ref()
            .map(|c| format!("{}:{}", c.org, c.key.expose_secret()).into()),
        registry_ca: access.registry_ca.clone(),
        ..BusSettings::default()
    }
}

/// A client for the registry at `url`, authenticating and trusting as `access` says.
pub fn registry_client(url: &str, access: &RegistryAccess) -> anyhow::Result<RegistryClient> {
    Ok(settings(url, access).registry()?)
}

pub fn kafka_config(bootstrap: &str, client_id: &str, options: &[(String, String)]) -> KafkaConfig {
    BusSettings {
        bootstrap_servers: bootstrap.to_owned(),
        kafka_options: options.iter().cloned().collect(),
        ..BusSettings::default()
    }
    .kafka(client_id)
}

pub fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
