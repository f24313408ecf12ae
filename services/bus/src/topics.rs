//! Topics as code: partitions, replication and retention for every catalog topic, from
//! `infra/topics.toml`, applied with the admin API.

use std::collections::BTreeMap;
use std::time::Duration;

use hixbus_contracts::Catalog;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;

use crate::config::{KafkaConfig, Role};
use crate::context::BusContext;

/// The topics file built into this binary (`infra/topics.toml`).
pub const EMBEDDED: &str = include_str!("../../../infra/topics.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    partitions: i32,
    replication_factor: i32,
    retention_ms: i64,
    dead_letter_retention_ms: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicEntry {
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    retention_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsFile {
    defaults: Defaults,
    /// Settings of every insurer's own topic (`insurer.<id>.feed`).
    #[serde(default)]
    insurer_topics: TopicEntry,
    /// Settings of every research project's own topic (`research.<id>.records`).
    #[serde(default)]
    research_topics: TopicEntry,
    topics: BTreeMap<String, TopicEntry>,
}

/// One topic as it should exist on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic-level configuration (`retention.ms`, `cleanup.policy`).
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("topics file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("topics file does not declare the catalog topics {0:?}")]
    Undeclared(Vec<String>),
    #[error("topics file declares {0:?}, which no catalog event travels on")]
    Unknown(Vec<String>),
    #[error("topic {0}: partitions and replication factor must be at least 1")]
    Invalid(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("reading the cluster's topics: {0}")]
    Metadata(String),
    #[error("creating {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Every topic (and its dead-letter topic) `text` declares, checked against `catalog`.
pub fn specs(text: &str, catalog: &Catalog) -> Result<Vec<TopicSpec>, TopicsError> {
    let file: TopicsFile = toml::from_str(text)?;
    let catalog_topics: Vec<&str> = catalog.topics();
    let undeclared: Vec<String> = catalog_topics
        .iter()
        .filter(|t| !file.topics.contains_key(**t))
        .map(|t| (*t).to_owned())
        .collect();
    if !undeclared.is_empty() {
        return Err(TopicsError::Undeclared(undeclared));
    }
    let unknown: Vec<String> = file
        .topics
        .keys()
        .filter(|t| !catalog_topics.contains(&t.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(TopicsError::Unknown(unknown));
    }
    let d = &file.defaults;
    let mut specs = Vec::new();
    for (name, entry) in &file.topics {
        let partitions = entry.partitions.unwrap_or(d.partitions);
        let replication_factor = entry.replication_factor.unwrap_or(d.replication_factor);
        if partitions < 1 || replication_factor < 1 {
            return Err(TopicsError::Invalid(name.clone()));
        }
        specs.push(TopicSpec {
            name: name.clone(),
            partitions,
            replication_factor,
            config: topic_config(entry.retention_ms.unwrap_or(d.retention_ms)),
        });
        // Dead letters are rare: a few partitions keep them ordered enough to read.
        specs.push(TopicSpec {
            name: crate::dlq_topic(name),
            partitions: partitions.min(3),
            replication_factor,
            config: topic_config(d.dead_letter_retention_ms),
        });
    }
    Ok(specs)
}

/// The topics of each insurer in `insurers` (its feed and the feed's dead letters), with the
/// settings `text` gives insurer topics.
pub fn insurer_specs<'a>(
    text: &str,
    insurers: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<TopicSpec>, TopicsError> {
    let file: TopicsFile = toml::from_str(text)?;
    let names = insurers.into_iter().map(hixbus_contracts::insurer_topic);
    Ok(own_topics(&file, &file.insurer_topics, names))
}

/// The topics of each research project in `projects` (its records and their dead letters),
/// with the settings `text` gives research topics.
pub fn research_specs<'a>(
    text: &str,
    projects: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<TopicSpec>, TopicsError> {
    let file: TopicsFile = toml::from_str(text)?;
    let names = projects.into_iter().map(hixbus_contracts::research_topic);
    Ok(own_topics(&file, &file.research_topics, names))
}

/// Topics of one recipient each, `names`, with `entry`'s settings over the defaults.
fn own_topics(
    file: &TopicsFile,
    entry: &TopicEntry,
    names: impl Iterator<Item = String>,
) -> Vec<TopicSpec> {
    let d = &file.defaults;
    let partitions = entry.partitions.unwrap_or(d.partitions);
    let replication_factor = entry.replication_factor.unwrap_or(d.replication_factor);
    let mut specs = Vec::new();
    for name in names {
        specs.push(TopicSpec {
            name: crate::dlq_topic(&name),
            partitions: partitions.min(3),
            replication_factor,
            config: topic_config(d.dead_letter_retention_ms),
        });
        specs.push(TopicSpec {
            name,
            partitions,
            replication_factor,
            config: topic_config(entry.retention_ms.unwrap_or(d.retention_ms)),
        });
    }
    specs
}

fn topic_config(retention_ms: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cleanup.policy".to_owned(), "delete".to_owned()),
        ("retention.ms".to_owned(), retention_ms.to_string()),
    ])
}

/// Whether `create` made a topic or found it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

/// Creates the topics that do not exist yet; existing ones are left untouched. The cluster is
/// asked which it has first, so one that has them all is asked nothing more (librdkafka's mock
/// cluster, for one, cannot create topics through the admin API: `hixbus up` makes them when
/// it starts it).
pub async fn create(
    config: &KafkaConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(String, Created)>, TopicsError> {
    let admin: AdminClient<BusContext> = config
        .to_rdkafka(Role::Admin)
        .create_with_context(BusContext::new(format!("{}-admin", config.client_id)))?;
    let (admin, existing) = tokio::task::spawn_blocking(move || {
        let names = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| {
                m.topics()
                    .iter()
                    .map(|t| t.name().to_owned())
                    .collect::<std::collections::BTreeSet<String>>()
            });
        (admin, names)
    })
    .await
    .map_err(|e| TopicsError::Metadata(e.to_string()))?;
    let existing = existing?;
    let all = specs;
    let order = |name: &str| all.iter().position(|s| s.name == name);
    let mut outcome: Vec<(String, Created)> = all
        .iter()
        .filter(|s| existing.contains(&s.name))
        .map(|s| (s.name.clone(), Created::AlreadyExisted))
        .collect();
    let specs: Vec<&TopicSpec> = all.iter().filter(|s| !existing.contains(&s.name)).collect();
    if specs.is_empty() {
        return Ok(outcome);
    }
    let configs: Vec<Vec<(&str, &str)>> = specs
        .iter()
        .map(|s| {
            s.config
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&configs)
        .map(|(spec, config)| {
            config.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                ),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    for result in results {
        match result {
            Ok(topic) => outcome.push((topic, Created::New)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcome.push((topic, Created::AlreadyExisted));
            }
            Err((topic, code)) => return Err(TopicsError::Create { topic, code }),
        }
    }
    // In the order asked for, whichever way each was found.
    outcome.sort_by_key(|(name, _)| order(name));
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_declares_every_catalog_topic_and_its_dead_letters() {
        let specs = specs(EMBEDDED, Catalog::embedded()).unwrap();
        for topic in Catalog::embedded().topics() {
            let main = specs.iter().find(|s| s.name == topic).expect(topic);
            assert!(main.partitions >= 1);
            let dlq = crate::dlq_topic(topic);
            assert!(specs.iter().any(|s| s.name == dlq), "{dlq}");
        }
        let consents = specs.iter().find(|s| s.name == "consents").unwrap();
        assert_eq!(consents.config["retention.ms"], "-1");
    }

    #[test]
    fn a_file_missing_a_catalog_topic_is_refused() {
        let text = EMBEDDED.replace("[topics.alerts]", "[topics.alarms]");
        match specs(&text, Catalog::embedded()) {
            Err(TopicsError::Undeclared(missing)) => assert_eq!(missing, ["alerts"]),
            other => panic!("expected Undeclared, got {other:?}"),
        }
    }

    #[test]
    fn unknown_settings_are_refused_rather_than_ignored() {
        let text = EMBEDDED.replace("partitions = 12", "partitionz = 12");
        assert!(matches!(
            specs(&text, Catalog::embedded()),
            Err(TopicsError::Parse(_))
        ));
    }
}
