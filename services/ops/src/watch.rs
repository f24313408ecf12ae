//! A look at the whole exchange every few seconds: each topic's end offsets and dead letters,
//! each consumer group's lag, the registry's subjects and each service's `/ready`.
//!
//! Sampled in the background, not per request: a console page then reads the latest snapshot
//! and costs the cluster nothing, however many operators keep it open, and throughput is the
//! difference between two samples (records per minute), which one look cannot give.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hixbus_bus::KafkaConfig;
use hixbus_bus::config::Role;
use hixbus_bus::context::BusContext;
use hixbus_contracts::codec::Codec;
use hixbus_registry_client::VersionRef;
use hixbus_service::CancellationToken;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;

/// How long one question to the broker may take before the sample reports it as a problem.
const BROKER_WAIT: Duration = Duration::from_secs(5);
/// How long a service may take to answer `/ready`.
const READY_WAIT: Duration = Duration::from_secs(3);
/// Throughput is measured over about this long (or since the first sample, when younger).
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Consumer groups reported at most. Each is asked through a client of its own (librdkafka
/// asks a group's offsets as a member of it), kept between samples: a bound on those too.
const MAX_GROUPS: usize = 50;

/// What the exchange looked like at `taken_at`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub taken_at: Option<DateTime<Utc>>,
    pub topics: Vec<TopicRow>,
    pub groups: Vec<GroupRow>,
    pub services: Vec<Health>,
    pub subjects: Vec<Subject>,
    /// What could not be looked at this time, in words (the rest of the snapshot stands).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicRow {
    pub topic: String,
    pub partitions: usize,
    /// The sum of its partitions' end offsets: every record ever written.
    pub end_offset: i64,
    /// Records still kept (end minus the log start, summed).
    pub records: i64,
    /// Records written per minute over the last minute; `None` until two samples exist.
    pub per_minute: Option<f64>,
    /// Records on its `.dlq` topic.
    pub dead_letters: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub group: String,
    /// Records on its topics that it has not committed yet, summed.
    pub lag: i64,
    pub topics: Vec<GroupTopic>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupTopic {
    pub topic: String,
    pub committed: i64,
    pub lag: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub name: String,
    pub url: String,
    pub ready: bool,
    /// Its answer's status, or why there was none.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub subject: String,
    pub versions: Vec<i32>,
    /// The schema id of its latest version.
    pub latest_id: Option<u32>,
}

/// Where the watcher looks.
#[derive(Debug, Clone)]
pub struct Targets {
    pub kafka: KafkaConfig,
    pub codec: Arc<Codec>,
    /// The exchange's topics (their `.dlq` topics are looked at with them).
    pub topics: Vec<String>,
    /// Groups to report even when the cluster does not list them.
    pub groups: Vec<String>,
    pub health_checks: Vec<(String, url::Url)>,
    pub every: Duration,
}

/// A partition's id with its low and high watermarks.
type Marks = (i32, i64, i64);

/// The latest snapshot, as the watcher keeps it.
#[derive(Debug, Clone)]
pub struct Watch {
    latest: watch::Receiver<Arc<Snapshot>>,
}

impl Watch {
    pub fn latest(&self) -> Arc<Snapshot> {
        self.latest.borrow().clone()
    }

    /// Starts looking every `targets.every` until `stopping` is cancelled.
    pub fn start(targets: Targets, stopping: CancellationToken) -> Self {
        let (publish, latest) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .connect_timeout(READY_WAIT)
                .timeout(READY_WAIT)
                .build()
                .unwrap_or_default();
            let mut history = History::default();
            let mut cluster: Option<Cluster> = None;
            loop {
                let snapshot = sample(&targets, &http, &mut cluster, &mut history).await;
                publish.send_replace(Arc::new(snapshot));
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(targets.every) => {}
                }
            }
        });
        Self { latest }
    }
}

/// End offsets seen at past samples, for throughput.
#[derive(Debug, Default)]
struct History {
    samples: VecDeque<(Instant, HashMap<String, i64>)>,
    /// The registry's subjects as last read, and when: reading them is two calls per subject,
    /// and they change when a schema is registered, not every sample.
    subjects: Option<(Instant, Vec<Subject>, Option<String>)>,
}

impl History {
    /// Records `ends` seen now and returns each topic's records per minute since the oldest
    /// sample within the window.
    fn rates(&mut self, now: Instant, ends: HashMap<String, i64>) -> HashMap<String, f64> {
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let mut rates = HashMap::new();
        if let Some((then, before)) = self.samples.front() {
            let minutes = now.duration_since(*then).as_secs_f64() / 60.0;
            if minutes > 0.0 {
                for (topic, end) in &ends {
                    if let Some(old) = before.get(topic) {
                        rates.insert(topic.clone(), (end - old).max(0) as f64 / minutes);
                    }
                }
            }
        }
        self.samples.push_back((now, ends));
        rates
    }
}

/// The clients a sample asks through, kept between samples (creating a librdkafka client
/// starts threads and connections).
struct Cluster {
    admin: BaseConsumer<BusContext>,
    groups: HashMap<String, BaseConsumer<BusContext>>,
}

impl Cluster {
    fn open(kafka: &KafkaConfig) -> Result<Self, String> {
        let admin = kafka
            .to_rdkafka(Role::Reader)
            .set("group.id", "hixbus-ops-watch")
            .create_with_context(BusContext::new(format!("{}-watch", kafka.client_id)))
            .map_err(|e| format!("cannot reach the cluster: {e}"))?;
        Ok(Self {
            admin,
            groups: HashMap::new(),
        })
    }

    /// Each partition's (low, high) watermarks; `None` when the topic does not exist.
    fn watermarks(&self, topic: &str) -> Result<Option<Vec<Marks>>, String> {
        let metadata = self
            .admin
            .fetch_metadata(Some(topic), BROKER_WAIT)
            .map_err(|e| format!("{topic}: {e}"))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if found.error().is_some() || found.partitions().is_empty() {
            return Ok(None);
        }
        found
            .partitions()
            .iter()
            .map(|p| {
                self.admin
                    .fetch_watermarks(topic, p.id(), BROKER_WAIT)
                    .map(|(low, high)| (p.id(), low, high))
                    .map_err(|e| format!("{topic}/{}: {e}", p.id()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The services' groups the cluster lists (none where it cannot list them).
    fn listed_groups(&self) -> Vec<String> {
        match self.admin.client().fetch_group_list(None, BROKER_WAIT) {
            Ok(list) => list
                .groups()
                .iter()
                .map(|g| g.name().to_owned())
                // The services' groups: the ones an operator watches (and the only ones the
                // operator service's principal may describe, docs/operations.md).
                .filter(|g| {
                    g.starts_with("hixbus-")
                        && !g.starts_with("hixbus-reader-")
                        && g != "hixbus-ops-watch"
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "the cluster does not list its groups");
                Vec::new()
            }
        }
    }

    /// `group`'s committed offsets on `partitions`, where it has one.
    fn committed(
        &mut self,
        kafka: &KafkaConfig,
        group: &str,
        partitions: &TopicPartitionList,
    ) -> Result<Vec<(String, i32, i64)>, String> {
        if !self.groups.contains_key(group) {
            // Never subscribes: asks the group's coordinator for its offsets, joins nothing.
            let consumer = kafka
                .to_rdkafka(Role::Reader)
                .set("group.id", group)
                .create_with_context(BusContext::new(format!("{}-watch", kafka.client_id)))
                .map_err(|e| format!("{group}: {e}"))?;
            self.groups.insert(group.to_owned(), consumer);
        }
        let consumer = &self.groups[group];
        let committed = consumer
            .committed_offsets(partitions.clone(), BROKER_WAIT)
            .map_err(|e| format!("{group}: {e}"))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_owned(), e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

/// What the broker side of a sample found.
#[derive(Default)]
struct BrokerLook {
    /// Each topic, its partitions' marks and its dead letters.
    topics: Vec<(String, Vec<Marks>, i64)>,
    groups: Vec<GroupRow>,
    problems: Vec<String>,
}

fn look_at_cluster(targets: &Targets, cluster: &mut Option<Cluster>) -> BrokerLook {
    let mut look = BrokerLook::default();
    if cluster.is_none() {
        match Cluster::open(&targets.kafka) {
            Ok(opened) => *cluster = Some(opened),
            Err(problem) => {
                look.problems.push(problem);
                return look;
            }
        }
    }
    let Some(cluster) = cluster.as_mut() else {
        return look;
    };
    let mut highs: HashMap<(String, i32), i64> = HashMap::new();
    let mut all = TopicPartitionList::new();
    for topic in &targets.topics {
        let marks = match cluster.watermarks(topic) {
            Ok(marks) => marks.unwrap_or_default(),
            Err(problem) => {
                look.problems.push(problem);
                continue;
            }
        };
        let dlq = hixbus_bus::dlq_topic(topic);
        let dead = match cluster.watermarks(&dlq) {
            Ok(marks) => marks
                .unwrap_or_default()
                .iter()
                .map(|(_, low, high)| high - low)
                .sum(),
            Err(problem) => {
                look.problems.push(problem);
                0
            }
        };
        for (partition, _, high) in &marks {
            highs.insert((topic.clone(), *partition), *high);
            all.add_partition(topic, *partition);
        }
        look.topics.push((topic.clone(), marks, dead));
    }
    let groups: BTreeSet<String> = targets
        .groups
        .iter()
        .cloned()
        .chain(cluster.listed_groups())
        .take(MAX_GROUPS)
        .collect();
    for group in groups {
        match cluster.committed(&targets.kafka, &group, &all) {
            Ok(offsets) => {
                let mut per_topic: BTreeMap<String, (i64, i64)> = BTreeMap::new();
                for (topic, partition, committed) in offsets {
                    let high = highs
                        .get(&(topic.clone(), partition))
                        .copied()
                        .unwrap_or(committed);
                    let entry = per_topic.entry(topic).or_default();
                    entry.0 += committed;
                    entry.1 += (high - committed).max(0);
                }
                let topics: Vec<GroupTopic> = per_topic
                    .into_iter()
                    .map(|(topic, (committed, lag))| GroupTopic {
                        topic,
                        committed,
                        lag,
                    })
                    .collect();
                look.groups.push(GroupRow {
                    group,
                    lag: topics.iter().map(|t| t.lag).sum(),
                    topics,
                });
            }
            Err(problem) => look.problems.push(problem),
        }
    }
    look
}

/// How often the registry's subjects' versions are read again (a new subject shows at the next
/// sample, a new version of a known one within this).
const SUBJECTS_EVERY: Duration = Duration::from_secs(60);

async fn sample(
    targets: &Targets,
    http: &reqwest::Client,
    cluster: &mut Option<Cluster>,
    history: &mut History,
) -> Snapshot {
    let taken_at = Utc::now();
    let now = Instant::now();
    // The broker's client calls block: on the blocking pool, with the clients moved there and
    // back.
    let (look, returned) = {
        let targets = targets.clone();
        let mut held = cluster.take();
        match tokio::task::spawn_blocking(move || {
            let look = look_at_cluster(&targets, &mut held);
            (look, held)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => (
                BrokerLook {
                    problems: vec![format!("looking at the cluster failed: {e}")],
                    ..BrokerLook::default()
                },
                None,
            ),
        }
    };
    *cluster = returned;
    let known = history.subjects.as_ref().and_then(|(at, subjects, _)| {
        (now.duration_since(*at) < SUBJECTS_EVERY).then(|| {
            subjects
                .iter()
                .map(|s| s.subject.as_str())
                .collect::<Vec<_>>()
        })
    });
    let (services, read) = tokio::join!(
        health(http, &targets.health_checks),
        subjects(&targets.codec, known)
    );
    if let Some((subjects, problem)) = read {
        history.subjects = Some((now, subjects, problem));
    }
    let (subjects, registry_problem) = history
        .subjects
        .as_ref()
        .map(|(_, s, p)| (s.clone(), p.clone()))
        .unwrap_or_default();
    let ends: HashMap<String, i64> = look
        .topics
        .iter()
        .map(|(topic, marks, _)| (topic.clone(), marks.iter().map(|m| m.2).sum()))
        .collect();
    let rates = history.rates(now, ends);
    let topics = look
        .topics
        .into_iter()
        .map(|(topic, marks, dead_letters)| TopicRow {
            per_minute: rates.get(&topic).copied(),
            partitions: marks.len(),
            end_offset: marks.iter().map(|m| m.2).sum(),
            records: marks.iter().map(|m| m.2 - m.1).sum(),
            dead_letters,
            topic,
        })
        .collect();
    let mut problems = look.problems;
    problems.extend(registry_problem);
    Snapshot {
        taken_at: Some(taken_at),
        topics,
        groups: look.groups,
        services,
        subjects,
        problems,
    }
}

async fn health(http: &reqwest::Client, checks: &[(String, url::Url)]) -> Vec<Health> {
    let asks = checks.iter().map(|(name, base)| async move {
        let url = base.join("ready").unwrap_or_else(|_| base.clone());
        let (ready, detail) = match http.get(url.clone()).send().await {
            Ok(answer) => {
                let status = answer.status();
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                let said = body
                    .get("status")
                    .or_else(|| body.get("reason"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                (
                    status.is_success(),
                    format!("{} {said}", status.as_u16()).trim().to_owned(),
                )
            }
            Err(e) if e.is_timeout() => (false, "no answer within 3 s".to_owned()),
            Err(e) if e.is_connect() => (false, "not reachable".to_owned()),
            Err(e) => (false, e.to_string()),
        };
        Health {
            name: name.clone(),
            url: base.to_string(),
            ready,
            detail,
        }
    });
    futures::future::join_all(asks).await
}

/// The registry's subjects with their versions, or `None` when the names are those `known`
/// (read less than [`SUBJECTS_EVERY`] ago): one call a sample instead of two per subject.
async fn subjects(
    codec: &Codec,
    known: Option<Vec<&str>>,
) -> Option<(Vec<Subject>, Option<String>)> {
    let registry = codec.registry();
    let names = match registry.subjects().await {
        Ok(names) => names,
        Err(e) => return Some((Vec::new(), Some(format!("schema registry: {e}")))),
    };
    if known.is_some_and(|known| known == names) {
        return None;
    }
    let mut out = Vec::with_capacity(names.len());
    for subject in names {
        let versions = registry.versions(&subject).await.unwrap_or_default();
        let latest_id = registry
            .version(&subject, VersionRef::Latest)
            .await
            .ok()
            .map(|v| v.id);
        out.push(Subject {
            subject,
            versions,
            latest_id,
        });
    }
    Some((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_the_difference_over_the_last_minute() {
        let mut history = History::default();
        let start = Instant::now();
        let ends = |n: i64| HashMap::from([("prescriptions".to_owned(), n)]);
        assert!(
            history.rates(start, ends(100)).is_empty(),
            "one sample: no rate"
        );
        let rates = history.rates(start + Duration::from_secs(30), ends(160));
        assert_eq!(rates["prescriptions"], 120.0);
        // Past the window the oldest sample is dropped: the rate is over the last minute.
        history.rates(start + Duration::from_secs(60), ends(160));
        let rates = history.rates(start + Duration::from_secs(90), ends(160));
        assert_eq!(rates["prescriptions"], 0.0);
    }
}
