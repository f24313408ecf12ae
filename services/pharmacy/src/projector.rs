//! Keeps the read model in step with the topics and announces what changed (see [`crate::changes`]).
//!
//! Every handler is idempotent on its own (inserts ignore duplicates, updates are conditional),
//! so redelivery after a crash or rebalance changes nothing and no claims table is needed.
//! Claims and cancellations share the prescription's topic and key, so they never overtake it;
//! a dispensing can, and waits for it (`HandlerError::NotYet`).

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, EventContext, HandlerError, KafkaConfig};
use hixbus_consent::ConsentBook;
use hixbus_contracts::codec::Codec;
use hixbus_contracts::{
    ConsentChanged, MedicationAlert, PrescriptionCancelled, PrescriptionClaimed,
    PrescriptionDispensed, PrescriptionIssued,
};

use crate::changes::Changes;
use crate::store::{Store, StoreError};

impl From<StoreError> for HandlerError {
    /// The store is a database: whatever fails there may work on a retry.
    fn from(e: StoreError) -> Self {
        HandlerError::transient(e)
    }
}

/// The read model and the screens that hear of its changes: the consumer's state.
#[derive(Debug, Clone)]
pub struct Projector {
    pub store: Store,
    pub changes: Changes,
    pub consents: ConsentBook,
}

impl Projector {
    /// Tells the screens about `id` when `changed`.
    async fn announce(&self, changed: bool, id: &str) {
        if changed {
            self.changes.announce(id).await;
        }
    }

    pub async fn issued(self, e: PrescriptionIssued, _: EventContext) -> Result<(), HandlerError> {
        // On PostgreSQL the insert announces itself, in the same statement.
        let channel = self.changes.channel();
        let inserted = self.store.insert_issued(&e, channel).await?;
        self.announce(inserted && channel.is_none(), &e.prescription_id)
            .await;
        Ok(())
    }

    /// Prescriptions that queued up behind each other (a lane catching up): one statement.
    pub async fn issued_run(self, run: Vec<PrescriptionIssued>) -> Result<(), HandlerError> {
        let channel = self.changes.channel();
        let inserted = self.store.insert_issued_all(&run, channel).await?;
        if channel.is_none() {
            for id in inserted {
                self.changes.announce(&id).await;
            }
        }
        Ok(())
    }

    pub async fn cancelled(
        self,
        e: PrescriptionCancelled,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let cancelled = self.store.cancel(&e.prescription_id).await?;
        self.announce(cancelled, &e.prescription_id).await;
        Ok(())
    }

    pub async fn claimed(
        self,
        e: PrescriptionClaimed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let claimed = self
            .store
            .claim(&e.prescription_id, &e.pharmacy.org_id)
            .await?;
        self.announce(claimed, &e.prescription_id).await;
        Ok(())
    }

    /// Dispensings travel on their own topic, so one can be read before its prescription (a
    /// replay, a pharmacy system publishing directly, a redriven prescription). Recording it
    /// then would find no row and lose it: the prescription would later look dispensable.
    pub async fn dispensed(
        self,
        e: PrescriptionDispensed,
        _: EventContext,
    ) -> Result<(), HandlerError> {
        let recorded = self.store.record_dispensed(&e).await?;
        let id = e.prescription_id;
        // Not recorded: already dispensed (done), or the prescription is not here yet — or its
        // insert landed just after the update looked; applying again works then.
        if !recorded && !self.store.is_dispensed(&id).await? {
            return Err(HandlerError::not_yet(format!("prescription {id}")));
        }
        self.announce(recorded, &id).await;
        Ok(())
    }

    /// Dispensings that queued up behind each other (a rebuild reads a topic of them): one
    /// statement. Those it did not record were dispensed already (done) or have no prescription
    /// here yet: then the run waits for it, as [`Self::dispensed`] does, and the bus applies the
    /// run again (those recorded meanwhile find themselves done) before, if it still waits,
    /// applying it one record at a time.
    pub async fn dispensed_run(self, run: Vec<PrescriptionDispensed>) -> Result<(), HandlerError> {
        let channel = self.changes.channel();
        let recorded = self.store.record_dispensed_all(&run, channel).await?;
        if channel.is_none() {
            for id in &recorded {
                self.changes.announce(id).await;
            }
        }
        let recorded: std::collections::HashSet<&str> =
            recorded.iter().map(String::as_str).collect();
        let unrecorded: Vec<&str> = run
            .iter()
            .map(|e| e.prescription_id.as_str())
            .filter(|id| !recorded.contains(id))
            .collect();
        let done = self.store.dispensed_among(&unrecorded).await?;
        match unrecorded.iter().find(|id| !done.contains(**id)) {
            Some(id) => Err(HandlerError::not_yet(format!("prescription {id}"))),
            None => Ok(()),
        }
    }

    pub async fn alert(self, e: MedicationAlert, _: EventContext) -> Result<(), HandlerError> {
        for prescription_id in self.store.add_alert(&e).await? {
            self.changes.announce(&prescription_id).await;
        }
        Ok(())
    }

    /// A patient's consent decision: kept in the book every read asks, and every prescription
    /// of theirs with alerts is announced, so open screens show the alerts as the decision
    /// has them now (withheld again at once after a revocation).
    pub async fn consent(self, e: ConsentChanged, _: EventContext) -> Result<(), HandlerError> {
        self.consents.put(&e).await?;
        for prescription_id in self.store.alerted(&e.envelope.patient_ref).await? {
            self.changes.announce(&prescription_id).await;
        }
        Ok(())
    }
}

/// The consumer that feeds the read model.
pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    projector: Projector,
) -> Result<Consumer, ConsumerError> {
    Consumer::builder(kafka, codec, group)
        .with_state(projector)
        .on(Projector::issued)?
        .batch(Projector::issued_run)?
        .on(Projector::cancelled)?
        .on(Projector::claimed)?
        .on(Projector::dispensed)?
        .batch(Projector::dispensed_run)?
        .on(Projector::alert)?
        .on(Projector::consent)?
        .build()
}
