//! The insurer's consumer: reads only its own topic, keeps the evidence, and decides each claim
//! version once. The decision is filed before it is sent, under the claim's event id, so a
//! claim delivered again (a rebalance, a replay, a duplicate on the topic) finds it and sends
//! that same decision again — same event id, one decision downstream.

use std::sync::Arc;

use hixbus_access::Directory;
use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig, Publisher};
use hixbus_claims::tariff::Tariff;
use hixbus_contracts::codec::Codec;
use hixbus_contracts::{
    CheckupCompleted, ClaimAdjudicated, ClaimEvidence, ClaimSubmitted, Envelope, insurer_prefix,
    insurer_topic,
};
use sha2::{Digest, Sha256};

use crate::adjudicate::{self, Context, Prior};
use crate::roster::Roster;
use crate::store::{Filing, Same, Store};

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6869_7862_7573_2d61_646a_7564_6963_0001);

/// The consumer group an insurer's adjudication reads with: under the insurer's own prefix,
/// which its ACL grants.
pub fn group(insurer: &str) -> String {
    format!("{}adjudication", insurer_prefix(insurer))
}

#[derive(Debug, Clone)]
pub struct Adjudicator {
    pub insurer: String,
    pub insurer_number: String,
    pub roster: Arc<Roster>,
    pub tariff: Arc<Tariff>,
    pub directory: Arc<Directory>,
    pub store: Store,
    pub publisher: Publisher,
}

/// Same provider, member, dates and lines: the same services billed twice.
fn fingerprint(c: &ClaimSubmitted) -> String {
    let lines: Vec<String> = c
        .lines
        .iter()
        .map(|l| {
            format!(
                "{}|{}|{}|{}",
                l.service.system, l.service.code, l.quantity, l.amount_jpy
            )
        })
        .collect();
    let text = format!(
        "{}\n{}\n{}\n{}\n{}",
        c.provider.org_id,
        c.member_id,
        c.service_start,
        c.service_end,
        lines.join("\n")
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Adjudicator {
    pub async fn evidence(self, e: ClaimEvidence, _: EventContext) -> Result<(), HandlerError> {
        if e.insurer_org != self.insurer {
            return Ok(());
        }
        self.store.keep_evidence(&e).await?;
        Ok(())
    }

    /// Checkups travel on the insurer's topic too; this reference insurer only adjudicates.
    pub async fn checkup(self, _: CheckupCompleted, _: EventContext) -> Result<(), HandlerError> {
        Ok(())
    }

    pub async fn claim(self, c: ClaimSubmitted, _: EventContext) -> Result<(), HandlerError> {
        if c.insurer_org != self.insurer {
            tracing::warn!(claim_id = %c.claim_id, insurer = %c.insurer_org, "a claim for another insurer on this insurer's topic; ignored");
            return Ok(());
        }
        if let Some(decided) = self.store.decision(&c.envelope.event_id).await? {
            // Sent before, or filed and cut short: the same decision, same event id.
            return self.send(&decided).await;
        }
        let evidence = match &c.prescription_id {
            Some(id) => self.store.evidence(id).await?,
            None => None,
        };
        let fingerprint = fingerprint(&c);
        let provider = &c.provider.org_id;
        let prior = Prior {
            prescription_billed_as: match &c.prescription_id {
                Some(id) => {
                    self.store
                        .other_claim(Same::Prescription(id), provider, &c.claim_id)
                        .await?
                }
                None => None,
            },
            same_content_as: self
                .store
                .other_claim(Same::Content(&fingerprint), provider, &c.claim_id)
                .await?,
            previous_version: if c.version > 1 {
                self.store
                    .version_outcome(provider, &c.claim_id, c.version - 1, "")
                    .await?
            } else {
                None
            },
            version_decided: self
                .store
                .version_outcome(provider, &c.claim_id, c.version, &c.envelope.event_id)
                .await?
                .is_some(),
        };
        let verdict = adjudicate::decide(
            &c,
            &Context {
                insurer_number: &self.insurer_number,
                roster: &self.roster,
                tariff: &self.tariff,
                directory: &self.directory,
                evidence: evidence.as_ref(),
                prior,
            },
        );
        let decision = ClaimAdjudicated {
            envelope: Envelope {
                event_id: uuid::Uuid::new_v5(&NAMESPACE, c.envelope.event_id.as_bytes())
                    .to_string(),
                correlation_id: Some(c.claim_id.clone()),
                causation_id: Some(c.envelope.event_id.clone()),
                ..Envelope::new(&self.insurer, &c.envelope.patient_ref)
            },
            claim_id: c.claim_id.clone(),
            insurer_org: self.insurer.clone(),
            provider_org: provider.clone(),
            outcome: verdict.outcome,
            paid_amount_jpy: verdict.paid_jpy,
            reasons: verdict.reasons,
            line_adjustments: verdict.line_adjustments,
            claim_version: c.version,
            claim_event_id: Some(c.envelope.event_id.clone()),
            reduced_by_jpy: verdict.reduced_by_jpy,
        };
        let filed = self
            .store
            .file(
                &Filing {
                    claim_event_id: &c.envelope.event_id,
                    provider_org: provider,
                    claim_id: &c.claim_id,
                    version: c.version,
                    prescription_id: c.prescription_id.as_deref(),
                    fingerprint: &fingerprint,
                    patient_ref: &c.envelope.patient_ref,
                },
                &decision,
            )
            .await?;
        if !filed {
            // Another replica decided it meanwhile: that decision stands.
            return Ok(());
        }
        tracing::info!(claim_id = %c.claim_id, version = c.version, outcome = decision.outcome.as_str(), "claim decided");
        self.send(&decision).await
    }

    async fn send(&self, decision: &ClaimAdjudicated) -> Result<(), HandlerError> {
        self.publisher
            .publish(decision)
            .await
            .map(drop)
            .map_err(HandlerError::transient)
    }
}

pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    adjudicator: Adjudicator,
) -> Result<Consumer, ConsumerError> {
    let topic = insurer_topic(&adjudicator.insurer);
    Consumer::builder(kafka, codec, group(&adjudicator.insurer))
        .with_state(adjudicator)
        .on(Adjudicator::evidence)?
        .on(Adjudicator::claim)?
        .on(Adjudicator::checkup)?
        .topics([topic])
        .build()
}
