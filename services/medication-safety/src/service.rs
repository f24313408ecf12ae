//! The running check: state rebuilt from the topics at start, then every new prescription
//! checked as it arrives, findings published as `MedicationAlert`.

use std::sync::{Arc, Mutex, PoisonError};

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::reader::{ReadError, Start, TopicReader};
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig, Publisher};
use hixbus_contracts::lifecycle::today_in_japan;
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

    async fn cancelled(
        self,
        e: PrescriptionCancelled,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        self.medications().cancelled(&e);
        Ok(())
    }

    async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        self.medications().dispensed(&self.rules, &e);
        Ok(())
    }

    /// Applies an event read at `position` (its record's offset) without checking it.
    fn apply(&self, event: &Event, position: i64) {
        match event {
            Event::PrescriptionIssued(e) => {
                self.medications()
                    .issued_at(&self.rules, e, position, today_in_japan());
            }
            Event::PrescriptionCancelled(e) => self.medications().cancelled(e),
            Event::PrescriptionDispensed(e) => self.medications().dispensed(&self.rules, e),
            _ => {}
        }
    }

    /// Checks a new prescription against the patient's others and publishes what it finds.
    async fn issued(self, e: PrescriptionIssued, ctx: EventContext) -> Result<(), HandlerError> {
        let conflicts = self
            .medications()
            .issued_at(&self.rules, &e, ctx.offset, today_in_japan());
        for conflict in conflicts {
            let alert = alert(&e, &conflict);
            tracing::info!(
                prescription_id = %e.prescription_id,
                kind = ?alert.kind,
                lines = alert.involved.len(),
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

/// The most lines one alert lists; the message counts the rest. Bounded so an alert (stored by
/// every pharmacy and clinic it involves) stays small whatever the prescriptions hold.
pub const MAX_INVOLVED_LINES: usize = 20;

fn alert(e: &PrescriptionIssued, c: &Conflict) -> MedicationAlert {
    // One alert per (new ingredient, conflicting ingredient, kind) of this prescription event:
    // the same conflict always gets the same id, however often it is found again.
    let key = format!(
        "{}/{}/{}/{:?}",
        e.envelope.event_id,
        c.new[0].recognized.ingredient,
        c.existing[0].recognized.ingredient,
        c.finding.kind
    );
    let alert_id = uuid::Uuid::new_v5(&ALERT_NAMESPACE, key.as_bytes()).to_string();
    let lines: Vec<_> = c.new.iter().chain(&c.existing).collect();
    let involved = lines
        .iter()
        .take(MAX_INVOLVED_LINES)
        .map(|l| l.alert_line())
        .collect();
    let mut message = c.finding.message.clone();
    if lines.len() > MAX_INVOLVED_LINES {
        let more = lines.len() - MAX_INVOLVED_LINES;
        message.push_str(&format!(" (他 {more} 行 / {more} more lines)"));
    }
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
        message,
        involved,
        rule_source: Some(c.finding.rule_source.clone()),
    }
}

/// Applies every prescription and dispensing on the topics (to where they ended when read) to
/// the state; how many.
async fn rebuild(
    kafka: &KafkaConfig,
    publisher: &Publisher,
    check: &Check,
) -> Result<usize, SafetyError> {
    let catalog = Catalog::embedded();
    let mut replayed = 0usize;
    for name in ["PrescriptionIssued", "PrescriptionDispensed"] {
        let Some(topic) = catalog.entry(name).map(|e| e.topic.clone()) else {
            continue;
        };
        // Applied as read, never held whole: the state is bounded by design (active lines of
        // current prescriptions), the topics are not.
        let mut reader = TopicReader::open(kafka, &topic, Start::Beginning)?;
        while let Some(record) = reader.next(true).await {
            let record = record?;
            let Some(payload) = record.payload.as_deref() else {
                continue;
            };
            // Records that do not decode were dead-lettered by the live consumer; they carry
            // nothing the state can use.
            if let Ok(Ok(decoded)) = publisher.codec().decode(payload).await {
                check.apply(&decoded.event, record.offset);
                replayed += 1;
            }
        }
    }
    Ok(replayed)
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
    // A broker that is away at start (a restart during an outage) is waited for, as the live
    // consumer waits for it; the state is built from scratch on each try.
    let mut wait = std::time::Duration::from_secs(1);
    let replayed = loop {
        match rebuild(kafka, &publisher, &check).await {
            Ok(replayed) => break replayed,
            Err(e) => {
                tracing::warn!(error = %e, ?wait, "cannot read the topics to rebuild state; retrying");
                *check.medications() = Medications::default();
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    };
    tracing::info!(replayed, "medication-safety state rebuilt from the topics");

    let codec = publisher.codec().clone();
    let consumer = Consumer::builder(kafka, codec, GROUP)
        .with_state(check)
        .on(Check::issued)?
        .on(Check::cancelled)?
        .on(Check::dispensed)?
        .build()?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::{CodedConcept, Date, samples};

    #[test]
    fn an_alert_lists_at_most_twenty_lines_and_counts_the_rest() {
        let rules = Rules::embedded().unwrap();
        let mut meds = Medications::default();
        let today = Date::from_ymd(2026, 11, 25).unwrap();
        let rx = |id: &str, org: &str| {
            let mut e = samples::prescription_issued("p", 60);
            e.prescription_id = id.to_owned();
            e.envelope.event_id = format!("ev-{id}");
            e.envelope.producer_org = org.to_owned();
            e.issued_on = today;
            for line in &mut e.lines {
                line.drug =
                    CodedConcept::new(samples::HOT9, "107602401", Some("ロキソニン錠６０ｍｇ"));
                line.other_codes.clear();
            }
            e
        };
        meds.issued(&rules, &rx("rx-1", "clinic-a"), today);
        let second = rx("rx-2", "clinic-b");
        let conflicts = meds.issued(&rules, &second, today);
        assert_eq!(conflicts.len(), 1);
        let alert = alert(&second, &conflicts[0]);
        assert_eq!(alert.involved.len(), MAX_INVOLVED_LINES);
        assert_eq!(alert.involved[0].prescription_id, "rx-2", "new lines first");
        assert!(
            alert.message.contains("100 more lines"),
            "{}",
            alert.message
        );
        assert_eq!(
            alert.alert_id,
            super::alert(&second, &conflicts[0]).alert_id,
            "the same conflict keeps its id"
        );
    }
}
