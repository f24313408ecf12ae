//! Configuration, the same way for every service: defaults (in the types) → a TOML file →
//! `HIXBUS_<KEY>` environment variables, into a typed struct that refuses unknown keys.
//!
//! Environment names are the keys in capitals with the prefix: `listen` is `HIXBUS_LISTEN`,
//! and the bus section's keys are used without their section (`bus.bootstrap_servers` is
//! `HIXBUS_BOOTSTRAP_SERVERS`), the names every hixbus command already reads. Only a service's
//! own keys are read from the environment, since other `HIXBUS_` variables (`HIXBUS_LOG`…)
//! belong to others; in a file, an unknown key is an error, so a typo is not silently a default.
//! Secrets are `SecretString`: never printed, not even in `Debug`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use hixbus_access::codes::CodeKeys;
use hixbus_bus::KafkaConfig;
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use hixbus_contracts::registry::RegistryClient;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Where a service finds the bus: the Kafka cluster and the schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    #[serde(default = "default_registry")]
    pub registry_url: String,
    /// `ORGANIZATION:API_KEY` for a registry that requires credentials.
    #[serde(default)]
    pub registry_auth: Option<SecretString>,
    /// A PEM file to trust for an https registry with a private CA.
    #[serde(default)]
    pub registry_ca: Option<PathBuf>,
    /// Raw librdkafka settings (`security.protocol`, `sasl.*`…), applied last.
    #[serde(default)]
    pub kafka_options: BTreeMap<String, String>,
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".to_owned()
}

fn default_registry() -> String {
    "http://127.0.0.1:8081".to_owned()
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            registry_url: default_registry(),
            registry_auth: None,
            registry_ca: None,
            kafka_options: BTreeMap::new(),
        }
    }
}

impl BusSettings {
    /// The Kafka client settings for `client_id`.
    pub fn kafka(&self, client_id: &str) -> KafkaConfig {
        self.kafka_options.iter().fold(
            KafkaConfig::new(&self.bootstrap_servers).with_client_id(client_id),
            |config, (k, v)| config.with_option(k, v),
        )
    }

    /// A client for the registry, authenticating and trusting as configured.
    pub fn registry(&self) -> Result<RegistryClient, ConnectError> {
        let mut client = RegistryClient::new(&self.registry_url)
            .map_err(|e| ConnectError(format!("registry_url {}: {e}", self.registry_url)))?;
        if let Some(path) = &self.registry_ca {
            let pem = std::fs::read(path)
                .map_err(|e| ConnectError(format!("reading {}: {e}", path.display())))?;
            client = client
                .with_root_certificate(&pem)
                .map_err(|e| ConnectError(format!("certificate {}: {e}", path.display())))?;
        }
        Ok(match &self.registry_auth {
            Some(auth) => match auth.expose_secret().split_once(':') {
                Some((org, key)) if !org.is_empty() && !key.is_empty() => {
                    client.with_basic_auth(org, key)
                }
                _ => {
                    return Err(ConnectError(
                        "registry_auth: expected ORGANIZATION:API_KEY".to_owned(),
                    ));
                }
            },
            None => client,
        })
    }

    /// The codec every service encodes and decodes with (schema ids looked up in the registry).
    pub fn codec(&self) -> Result<Arc<Codec>, ConnectError> {
        Ok(Arc::new(Codec::new(
            self.registry()?,
            SchemaIdStrategy::Lookup,
        )))
    }
}

/// A setting that names something unusable (a bad URL, an unreadable certificate).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// The access-code keys from a service's `access_code_key` and `access_code_previous_keys`
/// (shared by the clinic gateway, which issues codes, and the pharmacy, which looks them up).
pub fn code_keys(
    key: Option<&SecretString>,
    previous: &[SecretString],
) -> Result<CodeKeys, ConnectError> {
    let key = key.ok_or_else(|| {
        ConnectError(
            "access_code_key is required (HIXBUS_ACCESS_CODE_KEY; `hixbus orgs new-access-code-key` makes one)"
                .to_owned(),
        )
    })?;
    CodeKeys::parse(
        key.expose_secret(),
        previous.iter().map(ExposeSecret::expose_secret),
    )
    .map_err(|e| ConnectError(format!("access_code_key: {e}")))
}

/// The environment prefix.
pub const PREFIX: &str = "HIXBUS_";

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Loads `C` from its defaults, `file` (if given), then the environment.
pub fn load<C: DeserializeOwned>(file: Option<&Path>) -> Result<C, ConfigError> {
    load_as::<C, C>(file)
}

/// Reads what `C`'s file and environment say as `W`, a view of some of its keys: a runner
/// reads where a service connects (`database_url`, `organizations`, `bus`) without knowing the
/// service's other settings.
pub fn load_as<C: DeserializeOwned, W: DeserializeOwned>(
    file: Option<&Path>,
) -> Result<W, ConfigError> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let keys = env_keys::<C>();
    let env = Env::prefixed(PREFIX).filter_map(move |key| {
        keys.iter()
            .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
            .map(|(_, path)| path.clone().into())
    });
    figment
        .merge(env)
        .extract()
        .map_err(|e| ConfigError(Box::new(e)))
}

/// `C` from its defaults and `values`, ignoring the environment: for stacks that choose every
/// setting themselves (`hixbus up`, tests). A value for a key `C` does not have is skipped, so
/// one list serves every service.
pub fn local<C: DeserializeOwned>(values: &[(&str, &str)]) -> Result<C, ConfigError> {
    let known = fields::<C>();
    // Read as the environment's values are: `"1"` is a number, `"true"` a boolean.
    let values: BTreeMap<&str, figment::value::Value> = values
        .iter()
        .filter(|(key, _)| known.contains(key))
        .map(|(key, value)| {
            let parsed = value
                .parse()
                .unwrap_or_else(|never: std::convert::Infallible| match never {});
            (*key, parsed)
        })
        .collect();
    Figment::from(figment::providers::Serialized::defaults(values))
        .extract()
        .map_err(|e| ConfigError(Box::new(e)))
}

/// Whether `C` has the key `name` (e.g. whether a service takes a `database_url`).
pub fn has_key<C: DeserializeOwned>(name: &str) -> bool {
    fields::<C>().contains(&name)
}

/// Where a service connects, as every service's configuration names it.
#[derive(Debug, Clone, Deserialize)]
pub struct Wiring {
    #[serde(default)]
    pub database_url: Option<SecretString>,
    #[serde(default)]
    pub organizations: Option<PathBuf>,
    #[serde(default)]
    pub bus: BusSettings,
}

/// The environment variables `C` reads, e.g. `HIXBUS_LISTEN` (for help texts and checks).
pub fn env_names<C: DeserializeOwned>() -> Vec<String> {
    env_keys::<C>()
        .into_iter()
        .map(|(name, _)| format!("{PREFIX}{}", name.to_ascii_uppercase()))
        .collect()
}

/// (environment key without the prefix, the key's path in the configuration).
fn env_keys<C: DeserializeOwned>() -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for field in fields::<C>() {
        if *field == "bus" {
            keys.extend(
                fields::<BusSettings>()
                    .iter()
                    .map(|f| ((*f).to_owned(), format!("bus.{f}"))),
            );
        } else {
            keys.push(((*field).to_owned(), (*field).to_owned()));
        }
    }
    keys
}

/// A list from the environment (`a,b,c`) or from a file (a TOML array).
pub fn comma_list<'de, D: Deserializer<'de>, T: From<String>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Text(String),
        Items(Vec<String>),
    }
    let items = match List::deserialize(deserializer)? {
        List::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        List::Items(items) => items,
    };
    Ok(items.into_iter().map(T::from).collect())
}

/// The field names of a struct `T`, as its derived `Deserialize` declares them.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut capture = Capture(None);
    let _ = T::deserialize(&mut capture);
    capture.0.unwrap_or(&[])
}

/// A deserializer that only records the fields a struct asks for.
struct Capture(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Captured;

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields captured")
    }
}

impl std::error::Error for Captured {}

impl serde::de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured
    }
}

impl<'de> Deserializer<'de> for &mut Capture {
    type Error = Captured;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Captured> {
        self.0 = Some(fields);
        Err(Captured)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(default = "listen")]
        listen: SocketAddr,
        #[serde(default)]
        database_url: Option<SecretString>,
        #[serde(default, deserialize_with = "comma_list")]
        previous_keys: Vec<SecretString>,
        #[serde(default)]
        bus: BusSettings,
    }

    fn listen() -> SocketAddr {
        "127.0.0.1:8090".parse().unwrap()
    }

    #[test]
    fn the_environment_names_are_the_keys_with_the_prefix_and_bus_keys_unsectioned() {
        let names = env_names::<Example>();
        for name in [
            "HIXBUS_LISTEN",
            "HIXBUS_DATABASE_URL",
            "HIXBUS_PREVIOUS_KEYS",
            "HIXBUS_BOOTSTRAP_SERVERS",
            "HIXBUS_REGISTRY_URL",
            "HIXBUS_REGISTRY_AUTH",
        ] {
            assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
        }
        assert!(!names.contains(&"HIXBUS_BUS".to_owned()));
    }

    #[test]
    fn defaults_then_the_file_then_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "service.toml",
                "listen = \"127.0.0.1:9000\"\n[bus]\nbootstrap_servers = \"kafka:9092\"\n",
            )?;
            let defaults: Example = load(None).map_err(|e| e.to_string())?;
            assert_eq!(defaults.listen, listen());
            assert_eq!(defaults.bus.bootstrap_servers, "127.0.0.1:9092");

            let from_file: Example =
                load(Some(Path::new("service.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(from_file.listen.port(), 9000);
            assert_eq!(from_file.bus.bootstrap_servers, "kafka:9092");

            jail.set_env("HIXBUS_LISTEN", "127.0.0.1:9100");
            jail.set_env("HIXBUS_BOOTSTRAP_SERVERS", "other:9092");
            jail.set_env("HIXBUS_DATABASE_URL", "postgres://u:secret@db/x");
            jail.set_env("HIXBUS_PREVIOUS_KEYS", "k1:aa, k2:bb");
            jail.set_env("HIXBUS_LOG", "debug");
            let merged: Example =
                load(Some(Path::new("service.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(merged.listen.port(), 9100);
            assert_eq!(merged.bus.bootstrap_servers, "other:9092");
            let url = merged.database_url.as_ref().unwrap();
            assert_eq!(url.expose_secret(), "postgres://u:secret@db/x");
            assert!(!format!("{merged:?}").contains("secret@"));
            let keys: Vec<&str> = merged
                .previous_keys
                .iter()
                .map(ExposeSecret::expose_secret)
                .collect();
            assert_eq!(keys, ["k1:aa", "k2:bb"]);
            Ok(())
        });
    }

    #[test]
    fn a_local_configuration_takes_only_the_keys_it_has_and_ignores_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HIXBUS_LISTEN", "127.0.0.1:9100");
            let local: Example = local(&[("listen", "127.0.0.1:0"), ("not_a_key", "x")])
                .map_err(|e| e.to_string())?;
            assert_eq!(local.listen.port(), 0);
            assert!(local.database_url.is_none());
            assert!(has_key::<Example>("database_url"));
            assert!(!has_key::<BusSettings>("database_url"));
            Ok(())
        });
    }

    #[test]
    fn a_runner_reads_where_a_service_connects_from_the_same_sources() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("service.toml", "listen = \"127.0.0.1:9000\"\n")?;
            jail.set_env("HIXBUS_DATABASE_URL", "sqlite://x.db");
            let wiring: Wiring = load_as::<Example, Wiring>(Some(Path::new("service.toml")))
                .map_err(|e| e.to_string())?;
            assert_eq!(
                wiring.database_url.unwrap().expose_secret(),
                "sqlite://x.db"
            );
            Ok(())
        });
    }

    #[test]
    fn raw_kafka_settings_come_from_a_file_table_or_an_inline_table_in_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "service.toml",
                "[bus.kafka_options]\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n",
            )?;
            let from_file: Example =
                load(Some(Path::new("service.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                from_file.bus.kafka_options["sasl.mechanism"],
                "SCRAM-SHA-512"
            );
            jail.set_env(
                "HIXBUS_KAFKA_OPTIONS",
                "{\"security.protocol\"=\"SASL_SSL\"}",
            );
            let from_env: Example = load(None).map_err(|e| e.to_string())?;
            assert_eq!(from_env.bus.kafka_options["security.protocol"], "SASL_SSL");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "lisen = \"127.0.0.1:9000\"\n")?;
            let refused = load::<Example>(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(refused.to_string().contains("lisen"), "{refused}");
            jail.create_file("typo2.toml", "[bus]\nbootstrap = \"x\"\n")?;
            assert!(load::<Example>(Some(Path::new("typo2.toml"))).is_err());
            Ok(())
        });
    }
}
