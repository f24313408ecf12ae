//! Delivery to insurers: each insurer gets, on its own Kafka topic and in its HTTP feed, exactly
//! its own members' claims, the specific health checkups the law sends it, and the evidence its
//! claims check (突合) needs — and nothing clinical beyond that. What the insurer receives is
//! built here field by field from the clinical events, so a field added to a clinical schema
//! does not reach insurers unless someone adds it here on purpose.
//!
//! Order matters to the insurer's check: a dispensing claim must not overtake the dispensing it
//! bills. Both travel on the insurer's topic keyed by patient, so a claim is held back until
//! its prescription's dispensing (or cancellation) has been delivered, for at most
//! `evidence_wait`; after that it goes anyway, and the insurer returns it for what is missing.

use std::sync::Arc;
use std::time::Duration;

use hixbus_access::{Directory, Role};
use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig, Publisher};
use hixbus_contracts::codec::Codec;
use hixbus_contracts::{
    CheckupCompleted, CheckupType, ClaimEvidence, ClaimSubmitted, ClaimType, Coverage, Envelope,
    EventRecord, EvidenceLine, EvidenceStage, PrescriptionCancelled, PrescriptionDispensed,
    PrescriptionIssued, insurer_topic,
};
use hixbus_service::ReadModelError;
use hixbus_storage::{AuditLog, Database};
use serde::Serialize;

use crate::feed::{Changes, Feed};

/// Namespace of the evidence events' ids: one per source event and insurer.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6869_7862_7573_2d69_6e73_7572_6572_0001);

/// The consumer's state.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub changes: Changes,
    pub directory: Arc<Directory>,
    pub publisher: Publisher,
    pub db: Database,
    /// How long a dispensing claim waits for its dispensing to be delivered first.
    pub evidence_wait: Duration,
    /// Woken whenever this replica delivers a dispensing or a cancellation, so a claim held for
    /// one goes on at once rather than at its next retry.
    pub advanced: Arc<tokio::sync::Notify>,
}

/// How long a claim held for its dispensing waits in its handler, woken by this replica's
/// deliveries, before it is retried later (the dispensing may be another replica's).
const HOLD_IN_HANDLER: Duration = Duration::from_secs(1);

fn failed(e: impl Into<ReadModelError>) -> HandlerError {
    HandlerError::from(e.into())
}

impl Delivery {
    /// Whether `org` is an insurer on the exchange.
    fn is_insurer(&self, org: &str) -> bool {
        self.directory
            .get(org)
            .is_some_and(|o| o.role == Role::Insurer)
    }

    /// Puts `event` on `insurer`'s topic, then, in one transaction, audits the delivery, adds
    /// it to the insurer's feed and records how far its prescription got (`stage`). A retry
    /// after a failure in between puts it on the topic again with the same event id (consumers
    /// deduplicate on it); the feed holds it once.
    async fn deliver<E: EventRecord + Serialize>(
        &self,
        insurer: &str,
        kind: &str,
        subject_id: &str,
        event: &E,
        stage: Option<(&str, &ClaimEvidence)>,
    ) -> Result<(), HandlerError> {
        self.publisher
            .publish_to(&insurer_topic(insurer), event)
            .await
            .map_err(HandlerError::transient)?;
        let envelope = event.envelope();
        let body = serde_json::to_value(event).map_err(failed)?;
        let mut tx = self.db.pool.begin().await.map_err(failed)?;
        AuditLog::record_in(
            &mut tx,
            insurer,
            "insurer.topic",
            subject_id,
            &envelope.patient_ref,
        )
        .await
        .map_err(failed)?;
        if let Some((stage, evidence)) = stage {
            sqlx::query(
                "UPDATE insurer_prescriptions SET stage = $1, evidence = $2
                 WHERE prescription_id = $3",
            )
            .bind(stage)
            .bind(serde_json::to_string(evidence).map_err(failed)?)
            .bind(&evidence.prescription_id)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        // Last, so the insurer's counter is held only for the entry and the commit.
        let appended = Feed::append_in(
            &mut tx,
            insurer,
            kind,
            &envelope.event_id,
            subject_id,
            &envelope.patient_ref,
            &body,
        )
        .await?;
        tx.commit().await.map_err(failed)?;
        if stage.is_some() {
            self.advanced.notify_waiters();
        }
        if let Some(entry) = appended {
            self.changes.announce(&entry.key()).await;
        }
        Ok(())
    }

    /// A specific health checkup goes to the insurer its Coverage names, by law, and to no
    /// other; other checkups (employer, school, 人間ドック) are not the insurer's.
    pub async fn checkup(self, e: CheckupCompleted, _: EventContext) -> Result<(), HandlerError> {
        if e.checkup_type != CheckupType::SpecificHealthCheckup {
            return Ok(());
        }
        let Some(insurer) = e.insurer.as_ref().map(|i| i.org_id.clone()) else {
            return Ok(());
        };
        if !self.is_insurer(&insurer) {
            tracing::warn!(insurer = %insurer, checkup_id = %e.checkup_id, "checkup names no insurer on the exchange; not delivered");
            return Ok(());
        }
        let subject = e.checkup_id.clone();
        self.deliver(&insurer, "checkup", &subject, &e, None).await
    }

    /// The insurer of a prescription: the one its Coverage names, if it is on the exchange.
    fn insurer_of(&self, e: &PrescriptionIssued) -> Option<String> {
        let coverage = e.coverage.as_ref()?;
        coverage
            .insurer_org
            .clone()
            .filter(|org| self.is_insurer(org))
            .or_else(|| {
                self.directory
                    .with_institution_code(&coverage.insurer_number)
                    .find(|o| o.role == Role::Insurer)
                    .map(|o| o.id.clone())
            })
    }

    pub async fn issued(self, e: PrescriptionIssued, _: EventContext) -> Result<(), HandlerError> {
        let insurer = self.insurer_of(&e);
        let evidence = insurer.as_ref().map(|insurer| ClaimEvidence {
            envelope: evidence_envelope(&e.envelope, insurer),
            prescription_id: e.prescription_id.clone(),
            insurer_org: insurer.clone(),
            stage: EvidenceStage::Issued,
            issuer: e.issuer.clone(),
            issued_on: e.issued_on,
            prescribed: e
                .lines
                .iter()
                .map(|l| EvidenceLine {
                    line_no: l.line_no,
                    drug: l.drug.clone(),
                    quantity: l.quantity.value,
                    unit: l.quantity.unit.clone(),
                    days_supply: l.days_supply,
                    substituted: false,
                })
                .collect(),
            dispensed: Vec::new(),
            pharmacy: None,
        });
        let stored = evidence
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO insurer_prescriptions (prescription_id, insurer_org, stage, patient_ref,
                 evidence)
             VALUES ($1, $2, 'issued', $3, $4)
             ON CONFLICT (prescription_id) DO NOTHING",
        )
        .bind(&e.prescription_id)
        .bind(insurer.as_deref())
        .bind(&e.envelope.patient_ref)
        .bind(stored)
        .execute(&self.db.pool)
        .await
        .map_err(failed)?;
        match (insurer, evidence) {
            (Some(insurer), Some(evidence)) => {
                self.deliver(&insurer, "evidence", &e.prescription_id, &evidence, None)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The prescription's insurer and the evidence delivered so far, `NotYet` if the
    /// prescription has not been read.
    async fn known(
        &self,
        prescription_id: &str,
    ) -> Result<(Option<String>, Option<ClaimEvidence>), HandlerError> {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT insurer_org, evidence FROM insurer_prescriptions WHERE prescription_id = $1",
        )
        .bind(prescription_id)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(failed)?;
        let Some((insurer, evidence)) = row else {
            return Err(HandlerError::not_yet(format!(
                "prescription {prescription_id}"
            )));
        };
        let evidence = evidence
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(failed)?;
        Ok((insurer, evidence))
    }

    pub async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let dispensed = e
            .lines
            .iter()
            .map(|l| EvidenceLine {
                line_no: l.prescription_line_no,
                drug: l.drug.clone(),
                quantity: l.quantity.value,
                unit: l.quantity.unit.clone(),
                days_supply: l.days_supply,
                substituted: l.substituted,
            })
            .collect();
        self.advance(
            &e.envelope,
            &e.prescription_id,
            EvidenceStage::Dispensed,
            |issued| ClaimEvidence {
                dispensed,
                pharmacy: Some(e.pharmacy.clone()),
                ..issued
            },
        )
        .await
    }

    pub async fn cancelled(
        self,
        e: PrescriptionCancelled,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        self.advance(
            &e.envelope,
            &e.prescription_id,
            EvidenceStage::Cancelled,
            |issued| issued,
        )
        .await
    }

    /// Delivers the prescription's evidence at its next `stage`, made from what was delivered
    /// when it was issued; nothing for a prescription no insurer on the exchange pays.
    async fn advance(
        &self,
        source: &Envelope,
        prescription_id: &str,
        stage: EvidenceStage,
        with: impl FnOnce(ClaimEvidence) -> ClaimEvidence,
    ) -> Result<(), HandlerError> {
        let (insurer, issued) = self.known(prescription_id).await?;
        let (Some(insurer), Some(issued)) = (insurer, issued) else {
            return Ok(());
        };
        let evidence = ClaimEvidence {
            envelope: evidence_envelope(source, &insurer),
            stage,
            ..with(issued)
        };
        let name = match stage {
            EvidenceStage::Issued => "issued",
            EvidenceStage::Dispensed => "dispensed",
            EvidenceStage::Cancelled => "cancelled",
        };
        self.deliver(
            &insurer,
            "evidence",
            prescription_id,
            &evidence,
            Some((name, &evidence)),
        )
        .await
    }

    /// A claim goes to the insurer it names, cut to the allow-list ([`for_insurer`]).
    pub async fn claim(self, e: ClaimSubmitted, _: EventContext) -> Result<(), HandlerError> {
        if !self.is_insurer(&e.insurer_org) {
            tracing::warn!(insurer = %e.insurer_org, claim_id = %e.claim_id, "claim names no insurer on the exchange; not delivered");
            return Ok(());
        }
        if e.claim_type == ClaimType::Pharmacy
            && let Some(prescription) = &e.prescription_id
        {
            self.hold_for_dispensing(&e, prescription).await?;
        }
        let claim = for_insurer(&e);
        self.deliver(&e.insurer_org, "claim", &e.claim_id, &claim, None)
            .await
    }

    /// `NotYet` while the claim's prescription is neither dispensed nor cancelled and the claim
    /// has waited less than `evidence_wait`.
    async fn hold_for_dispensing(
        &self,
        e: &ClaimSubmitted,
        prescription: &str,
    ) -> Result<(), HandlerError> {
        let until = tokio::time::Instant::now() + HOLD_IN_HANDLER;
        loop {
            // Registered before the check, so a delivery in between is not missed.
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.delivered(prescription).await? {
                return Ok(());
            }
            if tokio::time::timeout_at(until, advanced).await.is_err() {
                break;
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        sqlx::query(
            "INSERT INTO insurer_claim_waits (event_id, first_seen_ms) VALUES ($1, $2)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&e.envelope.event_id)
        .bind(now)
        .execute(&self.db.pool)
        .await
        .map_err(failed)?;
        let first: i64 =
            sqlx::query_scalar("SELECT first_seen_ms FROM insurer_claim_waits WHERE event_id = $1")
                .bind(&e.envelope.event_id)
                .fetch_one(&self.db.pool)
                .await
                .map_err(failed)?;
        let waited = Duration::from_millis(u64::try_from(now - first).unwrap_or(0));
        if waited < self.evidence_wait {
            return Err(HandlerError::not_yet(format!(
                "the dispensing of prescription {prescription}"
            )));
        }
        Ok(())
    }
}

impl Delivery {
    /// Whether the prescription's dispensing or cancellation has been delivered.
    async fn delivered(&self, prescription: &str) -> Result<bool, HandlerError> {
        let stage: Option<String> = sqlx::query_scalar(
            "SELECT stage FROM insurer_prescriptions WHERE prescription_id = $1",
        )
        .bind(prescription)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(failed)?;
        Ok(matches!(stage.as_deref(), Some("dispensed" | "cancelled")))
    }
}

/// The evidence's envelope: produced by the source event's organization, caused by it.
fn evidence_envelope(source: &Envelope, insurer: &str) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::new_v5(
            &NAMESPACE,
            format!("{}/{insurer}", source.event_id).as_bytes(),
        )
        .to_string(),
        occurred_at: source.occurred_at,
        producer_org: source.producer_org.clone(),
        patient_ref: source.patient_ref.clone(),
        correlation_id: source.correlation_id.clone(),
        causation_id: Some(source.event_id.clone()),
    }
}

/// What an insurer receives of a claim: every field named here, on purpose.
pub fn for_insurer(e: &ClaimSubmitted) -> ClaimSubmitted {
    ClaimSubmitted {
        envelope: e.envelope.clone(),
        claim_id: e.claim_id.clone(),
        insurer_org: e.insurer_org.clone(),
        member_id: e.member_id.clone(),
        provider: e.provider.clone(),
        service_start: e.service_start,
        service_end: e.service_end,
        diagnoses: e.diagnoses.clone(),
        lines: e.lines.clone(),
        total_amount_jpy: e.total_amount_jpy,
        patient_copay_jpy: e.patient_copay_jpy,
        claim_type: e.claim_type,
        version: e.version,
        replaces_event_id: e.replaces_event_id.clone(),
        prescription_id: e.prescription_id.clone(),
        prescription_issuer_org: e.prescription_issuer_org.clone(),
        // The insurance data as billing needs them: not the sex the card shows, which the
        // prescription carries for statistics only.
        coverage: e.coverage.clone().map(|c| Coverage { sex: None, ..c }),
        insurer_share_jpy: e.insurer_share_jpy,
        public_expense_jpy: e.public_expense_jpy,
        tariff: e.tariff.clone(),
    }
}

pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    delivery: Delivery,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(delivery)
        .on(Delivery::checkup)?
        .on(Delivery::issued)?
        .on(Delivery::dispensed)?
        .on(Delivery::cancelled)?
        .on(Delivery::claim)?
        .build()
}
