//! Reading a topic without joining a consumer group: for `hixbus tail` and the DLQ tools, which
//! must never move a service's offsets.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaConfig, Role};
use crate::context::BusContext;
use crate::headers::{self, HeaderList};
use crate::member::Member;

/// A record copied out of librdkafka's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker reports one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HeaderList,
}

impl OwnedRecord {
    pub fn from_message<M: Message>(message: &M) -> Self {
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: headers::to_list(message.headers()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "no record of the partitions not at their end arrived for {0:?} (records of others may have)"
    )]
    Stalled(Duration),
}

/// How long a partition read past its reported end may go without a record before it counts
/// as read to its end (see [`TopicReader`]).
pub const SETTLE: Duration = Duration::from_millis(500);

/// Where reading starts in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
}

/// Reads every partition of one topic.
///
/// "The end" is what each partition held when the reader opened: a topic that keeps being
/// written to, as a live one does, is still read to an end. Waiting for librdkafka's
/// end-of-partition event alone could go on as long as the producers did.
///
/// The end the broker reports (the high watermark) is where reading first stops to look. Tansu
/// 0.6.0 reports it one past the first record of a partition's last multi-record batch, so the
/// rest of that batch lies beyond it. Past the reported end, a partition is therefore read on
/// until librdkafka's end-of-partition event (nothing more is there), a record stamped after the
/// reader opened (what follows was written since), or [`SETTLE`] without a record of it (Tansu's
/// short end also keeps librdkafka from ever signalling the end there; the rest of a batch
/// arrives with its first record). Records in between were there when the reader opened and are
/// returned; the stamped-after one is not. On a broker that reports the end right this costs one
/// more fetch per partition, and a partition written to all the time still ends at once.
pub struct TopicReader {
    consumer: Member,
    /// Partitions not read to their reported end yet, and the offset that end is.
    not_at_end: BTreeMap<i32, i64>,
    /// Partitions read to their reported end and being read on (see above), with when their
    /// last record came.
    past_reported_end: BTreeMap<i32, tokio::time::Instant>,
    /// When the reader opened, in milliseconds since the epoch (records' timestamps).
    opened_at_ms: i64,
    idle_timeout: Duration,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("not_at_end", &self.not_at_end)
            .finish_non_exhaustive()
    }
}

impl TopicReader {
    pub fn open(config: &KafkaConfig, topic: &str, start: Start) -> Result<Self, ReadError> {
        let offset = match start {
            Start::Beginning => Offset::Beginning,
            Start::End => Offset::End,
        };
        Self::open_at(config, topic, |_| offset)
    }

    /// Opens `topic` with a start offset chosen per partition.
    pub fn open_at(
        config: &KafkaConfig,
        topic: &str,
        start: impl Fn(i32) -> Offset,
    ) -> Result<Self, ReadError> {
        // Taken before the ends are: a record stamped later was written after the reader opened.
        let opened_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let consumer: StreamConsumer<BusContext> = config
            .to_rdkafka(Role::Reader)
            // Readers never commit; librdkafka still wants a group id to create a consumer.
            .set("group.id", format!("hixbus-reader-{}", std::process::id()))
            .create_with_context(BusContext::new(format!("{}-reader", config.client_id)))?;
        let partitions = partitions(&consumer, topic)?;
        let mut assignment = TopicPartitionList::new();
        let mut not_at_end = BTreeMap::new();
        for partition in partitions {
            let from = start(partition);
            assignment.add_partition_offset(topic, partition, from)?;
            let (low, high) =
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            let first = match from {
                Offset::Beginning => low,
                Offset::End => high,
                Offset::Offset(at) => at.max(low),
                Offset::OffsetTail(n) => (high - n).max(low),
                _ => low,
            };
            if first < high {
                not_at_end.insert(partition, high);
            }
        }
        consumer.assign(&assignment)?;
        Ok(Self {
            consumer: Member::new(consumer),
            not_at_end,
            past_reported_end: BTreeMap::new(),
            opened_at_ms,
            idle_timeout: Duration::from_secs(15),
        })
    }

    /// The next record; with `until_end`, `None` once every partition reached its end.
    ///
    /// Reading to the end, the idle timeout counts from the last record of a partition that is
    /// not at its end yet: records of partitions already at their end (written since the reader
    /// opened) do not reset it, so one partition that stops making progress while the others
    /// keep receiving live records is reported, not waited for as long as they keep coming.
    pub async fn next(&mut self, until_end: bool) -> Option<Result<OwnedRecord, ReadError>> {
        let waiting_since = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            self.past_reported_end
                .retain(|_, last| now.duration_since(*last) < SETTLE);
            if until_end && self.not_at_end.is_empty() && self.past_reported_end.is_empty() {
                return None;
            }
            let received = if until_end {
                let stalled_at = waiting_since + self.idle_timeout;
                let settled_at = self
                    .past_reported_end
                    .values()
                    .min()
                    .map(|last| *last + SETTLE);
                let deadline = settled_at.map_or(stalled_at, |settled| settled.min(stalled_at));
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_) if tokio::time::Instant::now() < stalled_at => continue,
                    Err(_) => return Some(Err(ReadError::Stalled(self.idle_timeout))),
                }
            } else {
                self.consumer.recv().await
            };
            match received {
                Ok(message) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    if until_end {
                        let now = tokio::time::Instant::now();
                        if let Some(&end) = self.not_at_end.get(&partition) {
                            if offset + 1 >= end {
                                self.not_at_end.remove(&partition);
                                self.past_reported_end.insert(partition, now);
                            }
                        } else if !self.past_reported_end.contains_key(&partition) {
                            // Written after the reader opened: beyond the end it reads to.
                            continue;
                        } else if written_after(&message, self.opened_at_ms) {
                            self.past_reported_end.remove(&partition);
                            continue;
                        } else {
                            self.past_reported_end.insert(partition, now);
                        }
                    }
                    return Some(Ok(OwnedRecord::from_message(&message)));
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.not_at_end.remove(&partition);
                    self.past_reported_end.remove(&partition);
                }
                // The broker is away for a moment: librdkafka reconnects by itself, and the
                // idle timeout bounds how long the reader waits for it.
                Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::RequestTimedOut,
                )) => {
                    tracing::debug!("reader: broker unavailable; waiting for it");
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    /// How long [`TopicReader::next`] waits for a record before it reports the reader stalled
    /// (15 s unless set).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Every record from the start position to the current end.
    pub async fn read_to_end(mut self) -> Result<Vec<OwnedRecord>, ReadError> {
        let mut records = Vec::new();
        while let Some(record) = self.next(true).await {
            records.push(record?);
        }
        Ok(records)
    }
}

/// Whether `message` was written after `opened_at_ms`. A record without a timestamp counts as
/// written after: reading past the reported end then stops at it, as it would on a broker that
/// reports the end right.
fn written_after<M: Message>(message: &M, opened_at_ms: i64) -> bool {
    message
        .timestamp()
        .to_millis()
        .is_none_or(|stamped| stamped > opened_at_ms)
}

/// The partitions of `topic`, from the cluster's metadata.
pub fn partitions<C: rdkafka::consumer::Consumer<BusContext>>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, ReadError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| ReadError::UnknownTopic(topic.to_owned()))?;
    Ok(found.partitions().iter().map(|p| p.id()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// A partition whose broker answers slowly while another partition keeps receiving live
    /// records: reading to the end reports it stalled after the idle timeout. Before, each live
    /// record of the other partition started the idle timeout again, so the reader waited as
    /// long as the slow broker took (or, with live records never stopping, for ever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_partition_that_makes_no_progress_is_reported_while_others_flow() {
        let cluster = MockCluster::new(2).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        cluster
            .partition_leader("t", 0, Some(2))
            .expect("partition 0 on broker 2");
        cluster
            .partition_leader("t", 1, Some(1))
            .expect("partition 1 on broker 1");
        let bootstrap = cluster.bootstrap_servers();
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "0")
            .create()
            .unwrap();
        for partition in [0, 1] {
            producer
                .send(
                    FutureRecord::<str, str>::to("t")
                        .partition(partition)
                        .payload("before"),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
        // Broker 2 will answer each request after 2 s: the reader learns partition 0's end
        // (within its 10 s), then waits that long again for each fetch, four times its idle
        // timeout.
        // The fast broker: the one that is not partition 0's leader, as metadata tells.
        let first_broker = {
            let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
            let metadata = probe
                .fetch_metadata(Some("t"), Duration::from_secs(10))
                .unwrap();
            let fast = metadata.brokers().iter().find(|b| b.id() == 1).unwrap();
            format!("{}:{}", fast.host(), fast.port())
        };
        cluster
            .broker_round_trip_time(2, Duration::from_secs(2))
            .unwrap();
        let reader = TopicReader::open(&KafkaConfig::new(&first_broker), "t", Start::Beginning)
            .unwrap()
            .with_idle_timeout(Duration::from_millis(500));
        // Live records on partition 1, all the while.
        let live = tokio::spawn({
            let producer = producer.clone();
            async move {
                loop {
                    let _ = producer
                        .send(
                            FutureRecord::<str, str>::to("t")
                                .partition(1)
                                .payload("live"),
                            Duration::from_secs(10),
                        )
                        .await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let started = std::time::Instant::now();
        let read = reader.read_to_end().await;
        let took = started.elapsed();
        live.abort();
        assert!(matches!(read, Err(ReadError::Stalled(_))), "{read:?}");
        assert!(
            took < Duration::from_millis(1800),
            "reported after {took:?}"
        );
    }
}
