//! Typed publishing: an event goes to its catalog topic, keyed by patient, and the call returns
//! only once the broker acknowledged it (`acks=all`, idempotent producer).

use std::sync::Arc;
use std::time::Duration;

use hixbus_contracts::codec::{Codec, EncodeError, Encoded};
use hixbus_contracts::{Catalog, Event, EventRecord};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::Instrument;

use crate::config::{KafkaConfig, Role};
use crate::context::BusContext;
use crate::headers::{self, HeaderList};
use crate::telemetry::metrics;
use crate::trace;

/// Where the broker stored a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode {event}: {source}")]
    Encode {
        event: &'static str,
        source: EncodeError,
    },
    #[error("{0} has no topic in the event catalog")]
    NotInCatalog(String),
    #[error("the broker did not acknowledge the record for {topic}: {source}")]
    Broker { topic: String, source: KafkaError },
    #[error("cannot create the Kafka producer: {0}")]
    Client(KafkaError),
}

impl PublishError {
    /// Whether the same publish may succeed later (broker or registry unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            PublishError::Encode { source, .. } => matches!(source, EncodeError::Transient { .. }),
            PublishError::Broker { .. } => true,
            PublishError::NotInCatalog(_) | PublishError::Client(_) => false,
        }
    }
}

/// The one topic `event` travels on (not a per-insurer or per-project one: those are named by
/// the caller).
fn catalog_topic(event: &str) -> Result<String, PublishError> {
    Catalog::embedded()
        .entry(event)
        .filter(|entry| !entry.is_per_recipient())
        .map(|entry| entry.topic.clone())
        .ok_or_else(|| PublishError::NotInCatalog(event.to_owned()))
}

/// A cheap-to-clone handle on one idempotent producer.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer<BusContext>,
    codec: Arc<Codec>,
    queue_timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(config: &KafkaConfig, codec: Arc<Codec>) -> Result<Self, PublishError> {
        let producer = config
            .to_rdkafka(Role::Producer)
            .create_with_context(BusContext::new(format!("{}-producer", config.client_id)))
            .map_err(PublishError::Client)?;
        Ok(Self {
            producer,
            codec,
            queue_timeout: Duration::from_secs(30),
        })
    }

    pub fn codec(&self) -> &Arc<Codec> {
        &self.codec
    }

    /// Publishes `event` to its topic and waits for the broker's acknowledgement.
    pub async fn publish<E: EventRecord>(&self, event: &E) -> Result<Delivery, PublishError> {
        self.publish_to(&catalog_topic(E::NAME)?, event).await
    }

    /// Publishes `event` to `topic` instead of its catalog topic: a per-insurer topic
    /// (`hixbus_contracts::insurer_topic`), which carries events cut to what that insurer's
    /// purpose needs. The record is framed with the event's own schema id, so any Confluent
    /// deserializer reads it.
    pub async fn publish_to<E: EventRecord>(
        &self,
        topic: &str,
        event: &E,
    ) -> Result<Delivery, PublishError> {
        let encoded = self
            .codec
            .encode(event)
            .await
            .map_err(|source| PublishError::Encode {
                event: E::NAME,
                source,
            });
        self.send_to(topic.to_owned(), E::NAME, event.envelope(), encoded)
            .await
    }

    /// Publishes an event whose type is only known at run time.
    pub async fn publish_event(&self, event: &Event) -> Result<Delivery, PublishError> {
        let encoded = self
            .codec
            .encode_event(event)
            .await
            .map_err(|source| PublishError::Encode {
                event: event.name(),
                source,
            });
        self.send_encoded(event.name(), event.envelope(), encoded)
            .await
    }

    async fn send_encoded(
        &self,
        name: &'static str,
        envelope: &hixbus_contracts::Envelope,
        encoded: Result<Encoded, PublishError>,
    ) -> Result<Delivery, PublishError> {
        self.send_to(catalog_topic(name)?, name, envelope, encoded)
            .await
    }

    async fn send_to(
        &self,
        topic: String,
        name: &'static str,
        envelope: &hixbus_contracts::Envelope,
        encoded: Result<Encoded, PublishError>,
    ) -> Result<Delivery, PublishError> {
        // OpenTelemetry's messaging conventions, so tracing backends show it as a Kafka send.
        // The key (the patient) is not recorded: traces are not for patient data.
        let span = tracing::info_span!(
            "hixbus.publish",
            otel.kind = "producer",
            otel.name = %format!("send {topic}"),
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = %topic,
            messaging.message.id = %envelope.event_id,
            event_type = name,
            event_id = %envelope.event_id,
        );
        let encoded = encoded?;
        let mut list: HeaderList = vec![
            (headers::EVENT_TYPE.to_owned(), name.as_bytes().to_vec()),
            (
                headers::EVENT_ID.to_owned(),
                envelope.event_id.as_bytes().to_vec(),
            ),
            (
                headers::SCHEMA_ID.to_owned(),
                encoded.schema_id.to_string().into_bytes(),
            ),
            (
                headers::PRODUCER_ORG.to_owned(),
                envelope.producer_org.as_bytes().to_vec(),
            ),
        ];
        trace::inject(&span, &mut list);
        self.send(
            &topic,
            name,
            envelope.patient_ref.as_bytes(),
            &encoded.payload,
            &list,
        )
        .instrument(span)
        .await
    }

    /// Publishes bytes as they are (dead letters, redrives). Waits for the acknowledgement.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        list: &HeaderList,
    ) -> Result<Delivery, PublishError> {
        // The event type travels in a header, so dead letters and redrives count under theirs.
        let event_type = headers::get(list, headers::EVENT_TYPE).unwrap_or("unknown");
        self.send(topic, event_type, key, payload, list).await
    }

    async fn send(
        &self,
        topic: &str,
        event_type: &str,
        key: &[u8],
        payload: &[u8],
        list: &HeaderList,
    ) -> Result<Delivery, PublishError> {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers::to_owned_headers(list));
        let label = [
            opentelemetry::KeyValue::new("topic", topic.to_owned()),
            opentelemetry::KeyValue::new("event_type", event_type.to_owned()),
        ];
        let started = std::time::Instant::now();
        match self
            .producer
            .send(record, Timeout::After(self.queue_timeout))
            .await
        {
            Ok(delivery) => {
                metrics().published.add(1, &label);
                // The failure series exists from the first publish (see `zero_failure_series`).
                metrics().publish_failures.add(0, &label);
                metrics()
                    .publish_duration
                    .record(started.elapsed().as_secs_f64(), &label);
                Ok(Delivery {
                    topic: topic.to_owned(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Err((source, _)) => {
                metrics().publish_failures.add(1, &label);
                Err(PublishError::Broker {
                    topic: topic.to_owned(),
                    source,
                })
            }
        }
    }

    /// Waits until every record handed to the producer was acknowledged or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
