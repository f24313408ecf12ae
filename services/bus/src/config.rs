//! One Kafka configuration for every client the runtime creates.
//!
//! The runtime owns the settings its guarantees depend on (idempotence, `acks=all`, manual offset
//! storage); everything else, such as security settings for a managed cluster, passes through
//! `librdkafka_options` untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// How often librdkafka reports its statistics (consumer lag among them): Prometheus's
/// default scrape interval, so each scrape sees a fresh lag.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(15);

/// Where the cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Sent as `client.id`; shows up in broker logs and metrics.
    pub client_id: String,
    /// How often librdkafka reports statistics into metrics; `None` disables them.
    pub statistics_interval: Option<Duration>,
    /// Raw librdkafka settings (`security.protocol`, `sasl.*`, …), applied last.
    pub librdkafka_options: BTreeMap<String, String>,
}

/// What a client is for; each role gets the settings its guarantees need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    /// A group member whose offsets are stored only after its handler succeeded.
    GroupConsumer,
    /// A reader that assigns partitions itself and never commits (tail, DLQ inspection).
    Reader,
    Admin,
}

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "hixbus".to_owned(),
            statistics_interval: Some(STATISTICS_INTERVAL),
            librdkafka_options: BTreeMap::new(),
        }
    }

    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.librdkafka_options.insert(key.into(), value.into());
        self
    }

    /// The librdkafka configuration for `role`.
    pub fn to_rdkafka(&self, role: Role) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        // librdkafka leaves Nagle's algorithm on (Kafka's Java client turns it off): a small
        // request sent while the previous one is unacknowledged could then wait for the
        // broker's delayed ACK, 40 ms on Linux. hixbus sends small records and wants them out
        // now; batching is linger.ms's job.
        config.set("socket.nagle.disable", "true");
        // After a broker comes back, reconnect within a second (the Java client's default)
        // rather than librdkafka's up to 10 s of doubled backoff. A group member that stays
        // away longer than its session (10 s) is expelled, and Tansu 0.6.0 mishandles a member
        // expelled by its own late heartbeat: the group keeps the gone member as its leader and
        // never forms again until the broker restarts (docs/reliability.md). The fault suite hit it
        // after ten broker kills in thirty seconds had grown the backoff to its cap.
        config.set("reconnect.backoff.max.ms", "1000");
        if let Some(interval) = self.statistics_interval {
            config.set("statistics.interval.ms", interval.as_millis().to_string());
        }
        match role {
            Role::Producer => {
                // Idempotence implies acks=all and bounded in-flight requests: retries can
                // neither duplicate nor reorder records within a partition.
                config
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", "30000");
            }
            Role::GroupConsumer => {
                // librdkafka commits in the background, but only offsets the runner stored
                // after a handler succeeded: at-least-once, never at-most-once.
                config
                    .set("enable.auto.commit", "true")
                    .set("auto.commit.interval.ms", "1000")
                    .set("enable.auto.offset.store", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("partition.assignment.strategy", "cooperative-sticky")
                    // Kafka answers a fetch as soon as data arrives, but some Kafka-protocol
                    // brokers (Tansu) hold it for the full wait: keep it short so delivery is
                    // measured in milliseconds everywhere, at the cost of idle polls.
                    .set("fetch.wait.max.ms", "20")
                    .set("session.timeout.ms", "10000")
                    .set("heartbeat.interval.ms", "1000");
            }
            Role::Reader => {
                config
                    .set("enable.auto.commit", "false")
                    .set("enable.partition.eof", "true")
                    .set("fetch.wait.max.ms", "20")
                    .set("auto.offset.reset", "earliest");
            }
            Role::Admin => {}
        }
        for (key, value) in &self.librdkafka_options {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_are_idempotent_and_wait_for_all_replicas() {
        let config = KafkaConfig::new("b:9092").to_rdkafka(Role::Producer);
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn group_consumers_only_commit_what_the_runner_stored() {
        let config = KafkaConfig::new("b:9092").to_rdkafka(Role::GroupConsumer);
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn no_client_waits_for_delayed_acks() {
        for role in [
            Role::Producer,
            Role::GroupConsumer,
            Role::Reader,
            Role::Admin,
        ] {
            let config = KafkaConfig::new("b:9092").to_rdkafka(role);
            assert_eq!(config.get("socket.nagle.disable"), Some("true"), "{role:?}");
        }
    }

    #[test]
    fn every_client_is_back_within_a_second_of_the_broker() {
        let session: u64 = KafkaConfig::new("b:9092")
            .to_rdkafka(Role::GroupConsumer)
            .get("session.timeout.ms")
            .and_then(|v| v.parse().ok())
            .expect("a session timeout");
        for role in [
            Role::Producer,
            Role::GroupConsumer,
            Role::Reader,
            Role::Admin,
        ] {
            let cap: u64 = KafkaConfig::new("b:9092")
                .to_rdkafka(role)
                .get("reconnect.backoff.max.ms")
                .and_then(|v| v.parse().ok())
                .expect("a reconnect backoff cap");
            // Several reconnect attempts fit in one session, so a broker restart never costs
            // a member its place in the group.
            assert!(
                cap * 5 <= session,
                "{role:?}: {cap} ms against {session} ms"
            );
        }
    }

    #[test]
    fn raw_options_pass_through_last() {
        let config = KafkaConfig::new("b:9092")
            .with_option("security.protocol", "SASL_SSL")
            .with_option("linger.ms", "50")
            .to_rdkafka(Role::Producer);
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("linger.ms"), Some("50"));
    }
}
