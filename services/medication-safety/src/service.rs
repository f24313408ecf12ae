//! The running check: state rebuilt from the topics at start, then every new prescription
//! checked as it arrives, findings published as `MedicationAlert`.

use std::sync::{Arc, Mutex, PoisonError};

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::reader::{ReadError, Start, TopicReader};
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig, Publisher};
use hixbus_contracts::{
    Catalog, Envelope, Event, MedicationAlert, PrescriptionCancelled, PrescriptionDispensed,
    PrescriptionIssued, Timestamp,
};

use crate::rules::Rules;
use crate::state::{Conflict, Medications};

/// The consumer group of the check.
pub const GROUP: &str = "hixbus-medication-safety";
/// The `producer_org` of its alerts.
pub const PRODUCER: &str = "hixbus-medication-safety";

/// Namespace for alert ids: the same conflict always gets the same id, so an alert published
/// again after a restart or redelivery is recognized downstream as the same alert.
const ALERT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6869_7862_7573_2d73_6166_6574_792d_616c);

#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("reading the topics to rebuild state: {0}")]
    Rebuild(#[from] ReadError),
    #[error("consumer: {0}")]
    Consumer(#[from] ConsumerError),
}

/// The shared state and what the handlers need.
#[derive(Debug, Clone)]
struct Check {
    rules: Arc<Rules>,
    medications: Arc<Mutex<Medications>>,
    publisher: Publisher,
}

impl Check {
    fn medications(&self) -> std::sync::MutexGuard<'_, Medications> {
        self.medications
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, event: &Event) {
        match event {
            Event::PrescriptionIssued(e) => {
                self.medications().issued(&self.rules, e);
            }
            Event::PrescriptionCancelled(e) => self.medications().cancelled(e),
            Event::PrescriptionDispensed(e) => self.medications().dispensed(&self.rules, e),
            _ => {}
        }
    }

    async fn issued(&self, e: PrescriptionIssued) -> Result<(), HandlerError> {
        let conflicts = self.medications().issued(&self.rules, &e);
        for conflict in conflicts {
            let alert = alert(&e, &conflict);
            tracing::info!(
                prescription_id = %e.prescription_id,
                kind = ?alert.kind,
                other = %conflict.existing.prescription_id,
                "medication alert"
            );
            self.publisher
                .publish(&alert)
                .await
                .map_err(HandlerError::transient)?;
        }
        Ok(())
    }
}

fn alert(e: &PrescriptionIssued, c: &Conflict) -> MedicationAlert {
    let key = format!(
        "{}/{}/{}/{}/{:?}",
        e.envelope.event_id,
        c.new.line_no,
        c.existing.prescription_id,
        c.existing.line_no,
        c.finding.kind
    );
    let alert_id = uuid::Uuid::new_v5(&ALERT_NAMESPACE, key.as_bytes()).to_string();
    MedicationAlert {
        envelope: Envelope {
            event_id: alert_id.clone(),
            occurred_at: Timestamp::now(),
            producer_org: PRODUCER.to_owned(),
            patient_ref: e.envelope.patient_ref.clone(),
            correlation_id: Some(e.prescription_id.clone()),
            causation_id: Some(e.envelope.event_id.clone()),
        },
        alert_id,
        prescription_id: e.prescription_id.clone(),
        kind: c.finding.kind,
        severity: c.finding.severity,
        message: c.finding.message.clone(),
        involved: vec![c.new.alert_line(), c.existing.alert_line()],
        rule_source: Some(c.finding.rule_source.clone()),
    }
}

/// Rebuilds the state from `prescriptions` and `dispensations`, then returns the consumer that
/// keeps checking.
pub async fn start(
    kafka: &KafkaConfig,
    publisher: Publisher,
    rules: Rules,
) -> Result<Consumer, SafetyError> {
    let check = Check {
        rules: Arc::new(rules),
        medications: Arc::default(),
        publisher: publisher.clone(),
    };
    let catalog = Catalog::embedded();
    let mut replayed = 0usize;
    for name in ["PrescriptionIssued", "PrescriptionDispensed"] {
        let Some(topic) = catalog.entry(name).map(|e| e.topic.clone()) else {
            continue;
        };
        let records = TopicReader::open(kafka, &topic, Start::Beginning)?
            .read_to_end()
            .await?;
        for record in records {
            let Some(payload) = record.payload.as_deref() else {
                continue;
            };
            // Records that do not decode were dead-lettered by the live consumer; they carry
            // nothing the state can use.
            if let Ok(Ok(decoded)) = publisher.codec().decode(payload).await {
                check.apply(&decoded.event);
                replayed += 1;
            }
        }
    }
    tracing::info!(replayed, "medication-safety state rebuilt from the topics");

    let codec = publisher.codec().clone();
    let (a, b, c) = (check.clone(), check.clone(), check);
    let consumer = Consumer::builder(kafka, codec, GROUP)
        .on(move |e: PrescriptionIssued, _: EventContext| {
            let check = a.clone();
            async move { check.issued(e).await }
        })?
        .on(move |e: PrescriptionCancelled, _: EventContext| {
            b.apply(&Event::PrescriptionCancelled(e));
            async { Ok(()) }
        })?
        .on(move |e: PrescriptionDispensed, _: EventContext| {
            c.apply(&Event::PrescriptionDispensed(e));
            async { Ok(()) }
        })?
        .build()?;
    Ok(consumer)
}
