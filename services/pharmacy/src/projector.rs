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

type Applied = futures::future::BoxFuture<'static, Result<Option<String>, StoreError>>;

/// Registers `apply` for `E`: it updates the store and returns the prescription to announce
/// when something changed.
fn project<E, F>(
    builder: ConsumerBuilder,
    store: &Store,
    changes: &Changes,
    apply: F,
) -> Result<ConsumerBuilder, ConsumerError>
where
    E: EventRecord,
    F: Fn(Store, E) -> Applied + Send + Sync + 'static,
{
    let (store, changes) = (store.clone(), changes.clone());
    let apply = Arc::new(apply);
    builder.on(move |event: E, _: EventContext| {
        let (store, changes, apply) = (store.clone(), changes.clone(), apply.clone());
        async move {
            let changed = apply(store.clone(), event)
                .await
                .map_err(HandlerError::transient)?;
            if let Some(prescription_id) = changed {
                changes.announce(&store, &prescription_id).await;
            }
            Ok(())
        }
    })
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
    let builder = builder.on({
        let (store, changes) = (store.clone(), changes.clone());
        move |e: PrescriptionIssued, _: EventContext| {
            let (store, changes) = (store.clone(), changes.clone());
            async move {
                let channel = changes.channel();
                let inserted = store
                    .insert_issued(&e, channel)
                    .await
                    .map_err(HandlerError::transient)?;
                // On PostgreSQL the insert announced itself.
                if inserted && channel.is_none() {
                    changes.announce(&store, &e.prescription_id).await;
                }
                Ok(())
            }
        }
    })?;
    let builder = project(
        builder,
        &store,
        &changes,
        |store, e: PrescriptionCancelled| {
            Box::pin(async move {
                Ok(store
                    .cancel(&e.prescription_id)
                    .await?
                    .then_some(e.prescription_id))
            })
        },
    )?;
    let builder = project(
        builder,
        &store,
        &changes,
        |store, e: PrescriptionClaimed| {
            Box::pin(async move {
                let claimed = store.claim(&e.prescription_id, &e.pharmacy.org_id).await?;
                Ok(claimed.then_some(e.prescription_id))
            })
        },
    )?;
    // Dispensings travel on their own topic, so one can be read before its prescription (a
    // replay, a pharmacy system publishing directly, a redriven prescription). Recording it
    // then would find no row and lose it: the prescription would later look dispensable.
    let builder = builder.on({
        let (store, changes) = (store.clone(), changes.clone());
        move |e: PrescriptionDispensed, _: EventContext| {
            let (store, changes) = (store.clone(), changes.clone());
            async move {
                let id = &e.prescription_id;
                if store
                    .record_dispensed(&e)
                    .await
                    .map_err(HandlerError::transient)?
                {
                    changes.announce(&store, id).await;
                } else if !store.contains(id).await.map_err(HandlerError::transient)? {
                    return Err(HandlerError::not_yet(format!("prescription {id}")));
                }
                Ok(())
            }
        }
    })?;
    let builder = builder.on({
        let (store, changes) = (store.clone(), changes.clone());
        move |e: MedicationAlert, _: EventContext| {
            let (store, changes) = (store.clone(), changes.clone());
            async move {
                let attached = store.add_alert(&e).await.map_err(HandlerError::transient)?;
                for prescription_id in attached {
                    changes.announce(&store, &prescription_id).await;
                }
                Ok(())
            }
        }
    })?;
    builder.build()
}
