//! The claims service's consumer: keeps prescriptions, prices each dispensing into its claim
//! and publishes it, and records the insurers' decisions for the providers.

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig, Publisher};
use hixbus_contracts::codec::Codec;
use hixbus_contracts::lifecycle;
use hixbus_contracts::{ClaimAdjudicated, Envelope, PrescriptionDispensed, PrescriptionIssued};
use hixbus_service::ReadModelError;

use crate::dispensing;
use crate::store::{NewClaim, Store, change_key};
use crate::tariff::Tariff;

/// Namespace of the ids of claims the service makes (see [`claim_event_id`]).
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6869_7862_7573_2d63_6c61_696d_7376_0001);

/// The event id of version `version` of `provider`'s claim `claim_id`: the same whoever makes
/// it and however often, so a retried publication is one claim downstream, not two.
pub fn claim_event_id(provider: &str, claim_id: &str, version: i32) -> String {
    uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("{provider}/{claim_id}/{version}").as_bytes(),
    )
    .to_string()
}

/// The PostgreSQL channel claim changes are announced on (see [`change_key`]).
pub const CHANNEL: &str = "hixbus_claims";

pub type Changes = hixbus_service::changes::Changes<Store>;

#[derive(Debug, Clone)]
pub struct Projector {
    pub store: Store,
    pub publisher: Publisher,
    pub tariff: Arc<Tariff>,
    pub changes: Changes,
}

impl Projector {
    pub async fn issued(self, e: PrescriptionIssued, _: EventContext) -> Result<(), HandlerError> {
        self.store.keep_prescription(&e).await?;
        Ok(())
    }

    /// A dispensing becomes its claim, once: the first version of `dispensing:<prescription>`.
    pub async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let provider = e.pharmacy.org_id.clone();
        let claim_id = dispensing::claim_id(&e.prescription_id);
        let existing = self.store.versions(&provider, &claim_id).await?;
        if let Some(first) = existing.first() {
            // Recorded before; publish again only if that was cut short.
            if first.status == "pending"
                && let Some(event) = &first.event
            {
                publish(&self.publisher, &self.store, event).await?;
                self.changes
                    .announce(&change_key(&provider, &claim_id, 1))
                    .await;
            }
            return Ok(());
        }
        let Some(issued) = self.store.prescription(&e.prescription_id).await? else {
            return Err(HandlerError::not_yet(format!(
                "prescription {}",
                e.prescription_id
            )));
        };
        let event_id = claim_event_id(&provider, &claim_id, 1);
        let envelope = Envelope {
            event_id: event_id.clone(),
            causation_id: Some(e.envelope.event_id.clone()),
            correlation_id: Some(e.prescription_id.clone()),
            ..Envelope::new(&provider, &e.envelope.patient_ref)
        };
        let service_date = lifecycle::date_in_japan(e.envelope.occurred_at)
            .unwrap_or_else(lifecycle::today_in_japan);
        let priced = dispensing::claim(&issued, &e, &self.tariff, envelope, service_date);
        let problem = priced.as_ref().err().map(|why| {
            tracing::warn!(prescription_id = %e.prescription_id, reason = %why, "dispensing not billed");
            why.to_string()
        });
        let claim = priced.ok();
        self.store
            .insert(&NewClaim {
                provider_org: &provider,
                claim_id: &claim_id,
                version: 1,
                event_id: &event_id,
                digest: &format!("dispensing:{}", e.envelope.event_id),
                status: if claim.is_some() {
                    "pending"
                } else {
                    "unpriced"
                },
                patient_ref: &e.envelope.patient_ref,
                insurer_org: issued
                    .coverage
                    .as_ref()
                    .and_then(|c| c.insurer_org.as_deref()),
                event: claim.as_ref(),
                problem: problem.as_deref(),
            })
            .await?;
        if let Some(claim) = &claim {
            publish(&self.publisher, &self.store, claim).await?;
        }
        self.changes
            .announce(&change_key(&provider, &claim_id, 1))
            .await;
        Ok(())
    }

    pub async fn adjudicated(
        self,
        e: ClaimAdjudicated,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        if self.store.decided(&e).await? {
            self.changes
                .announce(&change_key(&e.provider_org, &e.claim_id, e.claim_version))
                .await;
        }
        Ok(())
    }
}

/// Publishes a recorded claim and marks it submitted.
pub async fn publish(
    publisher: &Publisher,
    store: &Store,
    claim: &hixbus_contracts::ClaimSubmitted,
) -> Result<(), HandlerError> {
    publisher
        .publish(claim)
        .await
        .map_err(HandlerError::transient)?;
    store
        .set_status(&claim.envelope.event_id, "submitted")
        .await
        .map_err(|e: ReadModelError| HandlerError::from(e))
}

pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    projector: Projector,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(projector)
        .on(Projector::issued)?
        .on(Projector::dispensed)?
        .on(Projector::adjudicated)?
        .build()
}
