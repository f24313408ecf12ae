//! The rdkafka client context every runtime client uses: librdkafka's own logs go to `tracing`,
//! its statistics to metrics, and rebalances and commit failures are visible.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;

use crate::telemetry::metrics;

/// Labels the client in logs and metrics.
#[derive(Debug, Clone)]
pub struct BusContext {
    pub client: String,
    /// A group member's group: its lag is the group's, and alerts are per group.
    pub group: Option<String>,
}

impl BusContext {
    pub fn new(client: impl Into<String>) -> Self {
        Self {
            client: client.into(),
            group: None,
        }
    }

    pub fn for_group(client: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            client: client.into(),
            group: Some(group.into()),
        }
    }
}

impl ClientContext for BusContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let client = self.client.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client, facility, "{message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", client, facility, "{message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client, facility, "{message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client, facility, "{message}");
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        let m = metrics();
        let client = opentelemetry::KeyValue::new("client", self.client.clone());
        m.client_queued_messages
            .record(statistics.msg_cnt as i64, std::slice::from_ref(&client));
        let mut total_lag = 0i64;
        for topic in statistics.topics.values() {
            for partition in topic.partitions.values() {
                // Only a group member's lag is a group's (a reader's is its own business); the
                // internal partition is -1.
                let Some(group) = &self.group else { continue };
                if partition.partition < 0 {
                    continue;
                }
                // A partition handed to another replica stays in the statistics, no longer
                // fetched: its lag is that replica's to report now. A gauge keeps its last value,
                // so this one says 0 rather than counting the same records twice.
                let lag = if partition.fetch_state == "active" {
                    partition.consumer_lag
                } else {
                    0
                };
                // librdkafka reports -1 until it knows the lag.
                if lag < 0 {
                    continue;
                }
                total_lag += lag;
                m.consumer_lag.record(
                    lag,
                    &[
                        opentelemetry::KeyValue::new("group", group.clone()),
                        opentelemetry::KeyValue::new("topic", topic.topic.clone()),
                        opentelemetry::KeyValue::new("partition", i64::from(partition.partition)),
                    ],
                );
            }
        }
        tracing::trace!(
            client = %self.client,
            queued = statistics.msg_cnt,
            consumer_lag = total_lag,
            "librdkafka statistics"
        );
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            // Readers ask for end-of-partition events; they are progress, not trouble.
            return;
        }
        tracing::warn!(client = %self.client, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for BusContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(client = %self.client, partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(client = %self.client, partitions = %describe(tpl), "partitions revoked");
            }
            Rebalance::Error(e) => {
                tracing::warn!(client = %self.client, error = %e, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // A failed background commit is retried with the next one; the stored offsets stay.
            tracing::warn!(client = %self.client, error = %e, offsets = %describe(offsets), "offset commit failed");
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}
