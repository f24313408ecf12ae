//! Keeps the read model in step with the topics and announces what changed (see [`crate::changes`]).
//!
//! Every handler is idempotent on its own (inserts ignore duplicates, updates are conditional),
//! so redelivery after a crash or rebalance changes nothing and no claims table is needed.
//! Claims and cancellations share the prescription's topic and key, so they never overtake it;
//! a dispensing can, and waits for it (`HandlerError::NotYet`).

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, ConsumerBuilder, EventContext, HandlerError, KafkaConfig};
use hixbus_contracts::codec::Codec;
use hixbus_contracts::{
    EventRecord, MedicationAlert, PrescriptionCancelled, PrescriptionClaimed,
    PrescriptionDispensed, PrescriptionIssued,
};

use crate::changes::Changes;
use crate::store::{Store, StoreError};

/// The prescriptions a projection changed, to be announced to the screens.
type Applied = futures::future::BoxFuture<'static, Result<Vec<String>, HandlerError>>;

impl From<StoreError> for HandlerError {
    /// The store is a database: whatever fails there may work on a retry.
    fn from(e: StoreError) -> Self {
        HandlerError::transient(e)
    }
}

/// Registers `apply` for `E`: it updates the store and returns the prescriptions to announce.
fn project<E, F>(
    builder: ConsumerBuilder,
    store: &Store,
    changes: &Changes,
    apply: F,
) -> Result<ConsumerBuilder, ConsumerError>
where
    E: EventRecord,
    F: Fn(Store, Changes, E) -> Applied + Send + Sync + 'static,
{
    let (store, changes) = (store.clone(), changes.clone());
    let apply = Arc::new(apply);
    builder.on(move |event: E, _: EventContext| {
        let (store, changes, apply) = (store.clone(), changes.clone(), apply.clone());
        async move {
            for prescription_id in apply(store.clone(), changes.clone(), event).await? {
                changes.announce(&store, &prescription_id).await;
            }
            Ok(())
        }
    })
}

/// `id` when `changed`: what a single-prescription projection announces.
fn changed(changed: bool, id: String) -> Vec<String> {
    if changed { vec![id] } else { vec![] }
}

/// The consumer that feeds the read model.
pub fn consumer(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    store: Store,
    changes: Changes,
) -> Result<Consumer, ConsumerError> {
    let builder = Consumer::builder(kafka, codec, group);
    let builder = project(
        builder,
        &store,
        &changes,
        |store, changes, e: PrescriptionIssued| {
            Box::pin(async move {
                // On PostgreSQL the insert announces itself, in the same statement.
                let channel = changes.channel();
                let inserted = store.insert_issued(&e, channel).await?;
                Ok(changed(inserted && channel.is_none(), e.prescription_id))
            })
        },
    )?;
    let builder = project(
        builder,
        &store,
        &changes,
        |store, _, e: PrescriptionCancelled| {
            Box::pin(async move {
                let cancelled = store.cancel(&e.prescription_id).await?;
                Ok(changed(cancelled, e.prescription_id))
            })
        },
    )?;
    let builder = project(
        builder,
        &store,
        &changes,
        |store, _, e: PrescriptionClaimed| {
            Box::pin(async move {
                let claimed = store.claim(&e.prescription_id, &e.pharmacy.org_id).await?;
                Ok(changed(claimed, e.prescription_id))
            })
        },
    )?;
    // Dispensings travel on their own topic, so one can be read before its prescription (a
    // replay, a pharmacy system publishing directly, a redriven prescription). Recording it
    // then would find no row and lose it: the prescription would later look dispensable.
    let builder = project(
        builder,
        &store,
        &changes,
        |store, _, e: PrescriptionDispensed| {
            Box::pin(async move {
                let recorded = store.record_dispensed(&e).await?;
                let id = e.prescription_id;
                // Not recorded: already dispensed (done), or the prescription is not here yet —
                // or its insert landed just after the update looked; applying again works then.
                if !recorded && !store.is_dispensed(&id).await? {
                    return Err(HandlerError::not_yet(format!("prescription {id}")));
                }
                Ok(changed(recorded, id))
            })
        },
    )?;
    let builder = project(builder, &store, &changes, |store, _, e: MedicationAlert| {
        Box::pin(async move { Ok(store.add_alert(&e).await?) })
    })?;
    builder.build()
}
