//! Dead letters: records that can never be processed, kept with the reason.
//!
//! A dead letter is the original record (same key, same bytes, same headers) on `<topic>.dlq`,
//! plus `hixbus.dlq.*` headers saying why it failed, where it came from and when. Keeping the
//! original bytes means nothing is lost and a redrive after a fix replays exactly what the
//! producer sent.

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hixbus_contracts::codec::Codec;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::{KafkaConfig, Role};
use crate::context::BusContext;
use crate::headers::{self, HeaderList};
use crate::member::Member;
use crate::publisher::{Delivery, PublishError, Publisher};
use crate::reader::{OwnedRecord, ReadError, Start, TopicReader};

pub const SUFFIX: &str = ".dlq";
pub const CAUSE: &str = "hixbus.dlq.cause";
pub const CAUSE_KIND: &str = "hixbus.dlq.cause_kind";
pub const SOURCE_TOPIC: &str = "hixbus.dlq.source_topic";
pub const SOURCE_PARTITION: &str = "hixbus.dlq.source_partition";
pub const SOURCE_OFFSET: &str = "hixbus.dlq.source_offset";
pub const FAILED_AT: &str = "hixbus.dlq.failed_at";
pub const CONSUMER_GROUP: &str = "hixbus.dlq.consumer_group";
/// Set on a redriven record: `<dlq topic>/<partition>/<offset>` it was copied from.
pub const REDRIVEN_FROM: &str = "hixbus.redriven_from";

const DLQ_PREFIX: &str = "hixbus.dlq.";

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// Not Confluent-framed, or the Avro body does not match its schema.
    Undecodable,
    /// The schema id is unknown to the registry, or not a hixbus event.
    UnknownSchema,
    /// The handler said the event can never be applied.
    Rejected,
    /// The handler kept failing transiently past the retry policy's limit.
    RetriesExhausted,
    /// The handler waited for an earlier event (`HandlerError::NotYet`) that never came.
    DependencyMissing,
}

impl CauseKind {
    pub const ALL: [CauseKind; 5] = [
        CauseKind::Undecodable,
        CauseKind::UnknownSchema,
        CauseKind::Rejected,
        CauseKind::RetriesExhausted,
        CauseKind::DependencyMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Undecodable => "undecodable",
            CauseKind::UnknownSchema => "unknown_schema",
            CauseKind::Rejected => "rejected",
            CauseKind::RetriesExhausted => "retries_exhausted",
            CauseKind::DependencyMissing => "dependency_missing",
        }
    }
}

/// The headers of the dead letter for `record`.
pub fn dead_letter_headers(
    record: &OwnedRecord,
    kind: CauseKind,
    cause: &str,
    group: &str,
    failed_at: DateTime<Utc>,
) -> HeaderList {
    let mut list = record.headers.clone();
    headers::set(&mut list, CAUSE, cause);
    headers::set(&mut list, CAUSE_KIND, kind.as_str());
    headers::set(&mut list, SOURCE_TOPIC, record.topic.as_str());
    headers::set(&mut list, SOURCE_PARTITION, record.partition.to_string());
    headers::set(&mut list, SOURCE_OFFSET, record.offset.to_string());
    headers::set(&mut list, FAILED_AT, failed_at.to_rfc3339());
    headers::set(&mut list, CONSUMER_GROUP, group);
    list
}

/// A dead letter as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub failed_at: Option<String>,
    pub cause_kind: Option<String>,
    pub cause: Option<String>,
    pub consumer_group: Option<String>,
    pub event_type: Option<String>,
    pub key: Option<String>,
    /// The original record's headers, without the dead-letter ones.
    pub original_headers: Vec<(String, String)>,
    /// The original value, base64.
    pub payload_base64: Option<String>,
}

impl DeadLetter {
    pub fn from_record(record: &OwnedRecord) -> Self {
        let get = |name| headers::get(&record.headers, name).map(str::to_owned);
        Self {
            dlq_partition: record.partition,
            dlq_offset: record.offset,
            source_topic: get(SOURCE_TOPIC),
            source_partition: get(SOURCE_PARTITION).and_then(|v| v.parse().ok()),
            source_offset: get(SOURCE_OFFSET).and_then(|v| v.parse().ok()),
            failed_at: get(FAILED_AT),
            cause_kind: get(CAUSE_KIND),
            cause: get(CAUSE),
            consumer_group: get(CONSUMER_GROUP),
            event_type: get(headers::EVENT_TYPE),
            key: record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            original_headers: original_headers(&record.headers)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
            payload_base64: record
                .payload
                .as_deref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        }
    }
}

/// `list` without the dead-letter headers.
pub fn original_headers(list: &HeaderList) -> HeaderList {
    list.iter()
        .filter(|(key, _)| !key.starts_with(DLQ_PREFIX))
        .cloned()
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("dead letter {partition}/{offset} has no source topic header; cannot redrive it")]
    NoSource { partition: i32, offset: i64 },
    #[error("no dead letter at partition {partition}, offset {offset} of {topic}")]
    NotFound {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// Every dead letter of `topic` (the source topic, not the `.dlq` one).
pub async fn list(config: &KafkaConfig, topic: &str) -> Result<Vec<DeadLetter>, DlqError> {
    let records = TopicReader::open(config, &crate::dlq_topic(topic), Start::Beginning)?
        .read_to_end()
        .await?;
    Ok(records.iter().map(DeadLetter::from_record).collect())
}

/// The newest dead letters of `topic`: at most `per_partition` from the end of each partition
/// of its `.dlq` topic, newest first. A screen shows these; a dead-letter topic that grew to
/// millions is not read whole for it.
pub async fn latest(
    config: &KafkaConfig,
    topic: &str,
    per_partition: i64,
) -> Result<Vec<DeadLetter>, DlqError> {
    let tail = per_partition.max(1);
    let mut records = TopicReader::open_at(config, &crate::dlq_topic(topic), |_| {
        Offset::OffsetTail(tail)
    })?
    .read_to_end()
    .await?;
    records.sort_by_key(|r| std::cmp::Reverse((r.timestamp_ms, r.partition, r.offset)));
    Ok(records.iter().map(DeadLetter::from_record).collect())
}

/// One dead letter with its raw record.
pub async fn find(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<OwnedRecord, DlqError> {
    let dlq = crate::dlq_topic(topic);
    let mut reader = TopicReader::open_at(config, &dlq, |_| Offset::Offset(offset))?;
    while let Some(record) = reader.next(true).await {
        let record = record?;
        if record.partition == partition && record.offset == offset {
            return Ok(record);
        }
    }
    Err(DlqError::NotFound {
        topic: dlq,
        partition,
        offset,
    })
}

/// What a redrive did with one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Redriven {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub to_topic: String,
    pub to_partition: i32,
    pub to_offset: i64,
}

/// Consumer group that remembers how far `redrive_pending` got, per source topic.
pub fn redrive_group(topic: &str) -> String {
    format!("hixbus.dlq-redrive.{topic}")
}

/// Puts one dead letter back on its source topic.
pub async fn redrive_one(
    config: &KafkaConfig,
    publisher: &Publisher,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Redriven, DlqError> {
    let record = find(config, topic, partition, offset).await?;
    republish(publisher, &record).await
}

/// Puts every dead letter not redriven before back on its source topic, in order, remembering
/// progress in a consumer group so a second run does not duplicate the first.
pub async fn redrive_pending(
    config: &KafkaConfig,
    publisher: &Publisher,
    topic: &str,
) -> Result<Vec<Redriven>, DlqError> {
    let dlq = crate::dlq_topic(topic);
    let group = redrive_group(topic);
    let committer = Member::new(
        config
            .to_rdkafka(Role::Reader)
            .set("group.id", &group)
            .create_with_context(BusContext::new(format!("{}-redrive", config.client_id)))?,
    );
    let partitions = crate::reader::partitions(&*committer, &dlq)?;
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(&dlq, *p);
    }
    let committed = committer.committed_offsets(wanted, std::time::Duration::from_secs(10))?;
    let start = |p: i32| match committed.find_partition(&dlq, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Offset::Offset(o),
        _ => Offset::Beginning,
    };
    let mut reader = TopicReader::open_at(config, &dlq, start)?;
    let mut done = Vec::new();
    while let Some(record) = reader.next(true).await {
        let record = record?;
        done.push(republish(publisher, &record).await?);
        let mut progress = TopicPartitionList::new();
        progress.add_partition_offset(&dlq, record.partition, Offset::Offset(record.offset + 1))?;
        committer.commit(&progress, CommitMode::Sync)?;
    }
    Ok(done)
}

/// Puts `record`, a dead letter read off a `.dlq` topic, back on its source topic, marked with
/// where it came from.
pub async fn republish(publisher: &Publisher, record: &OwnedRecord) -> Result<Redriven, DlqError> {
    let source = headers::get(&record.headers, SOURCE_TOPIC)
        .ok_or(DlqError::NoSource {
            partition: record.partition,
            offset: record.offset,
        })?
        .to_owned();
    let mut list = original_headers(&record.headers);
    headers::set(
        &mut list,
        REDRIVEN_FROM,
        format!("{}/{}/{}", record.topic, record.partition, record.offset),
    );
    let Delivery {
        topic,
        partition,
        offset,
    } = publisher
        .send_raw(
            &source,
            record.key.as_deref().unwrap_or_default(),
            record.payload.as_deref().unwrap_or_default(),
            &list,
        )
        .await?;
    Ok(Redriven {
        dlq_partition: record.partition,
        dlq_offset: record.offset,
        to_topic: topic,
        to_partition: partition,
        to_offset: offset,
    })
}

/// Decodes a dead letter's payload for display, if it can be decoded at all.
pub async fn describe_payload(codec: &Arc<Codec>, record: &OwnedRecord) -> serde_json::Value {
    let Some(payload) = record.payload.as_deref() else {
        return serde_json::json!({ "error": "record has no value" });
    };
    match codec.decode(payload).await {
        Ok(Ok(decoded)) => serde_json::json!({
            "schema_id": decoded.schema_id,
            "event": decoded.event,
        }),
        Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
        Err(e) => serde_json::json!({ "error": e.to_string(), "transient": true }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OwnedRecord {
        OwnedRecord {
            topic: "prescriptions".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: None,
            key: Some(b"patient-1".to_vec()),
            payload: Some(vec![0, 0, 0, 0, 9, 1]),
            headers: vec![(headers::EVENT_TYPE.into(), b"PrescriptionIssued".to_vec())],
        }
    }

    #[test]
    fn a_dead_letter_carries_its_cause_and_origin_and_keeps_the_original() {
        let at = DateTime::parse_from_rfc3339("2026-11-25T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        let list = dead_letter_headers(&record(), CauseKind::Rejected, "no such pharmacy", "g", at);
        let dlq = OwnedRecord {
            topic: "prescriptions.dlq".into(),
            partition: 0,
            offset: 7,
            headers: list,
            ..record()
        };
        let letter = DeadLetter::from_record(&dlq);
        assert_eq!(letter.cause.as_deref(), Some("no such pharmacy"));
        assert_eq!(letter.cause_kind.as_deref(), Some("rejected"));
        assert_eq!(letter.source_topic.as_deref(), Some("prescriptions"));
        assert_eq!(letter.source_partition, Some(2));
        assert_eq!(letter.source_offset, Some(41));
        assert_eq!(
            letter.failed_at.as_deref(),
            Some("2026-11-25T01:02:03+00:00")
        );
        assert_eq!(letter.event_type.as_deref(), Some("PrescriptionIssued"));
        assert_eq!(original_headers(&dlq.headers), record().headers);
    }
}
