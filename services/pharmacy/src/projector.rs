//! Keeps the read model in step with the topics and tells live inbox streams what changed.
//!
//! Every handler is idempotent on its own (inserts ignore duplicates, updates are conditional),
//! so redelivery after a crash or rebalance changes nothing and no claims table is needed.

use std::sync::Arc;

use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::shutdown::Signal;
use hixbus_bus::{Consumer, ConsumerBuilder, EventContext, HandlerError, KafkaConfig};
use hixbus_contracts::codec::Codec;
use hixbus_contracts::{
    EventRecord, MedicationAlert, PrescriptionCancelled, PrescriptionClaimed,
    PrescriptionDispensed, PrescriptionIssued,
};
use tokio::sync::broadcast;

use crate::store::{Store, StoreError};

/// A prescription changed; `holder` is the pharmacy whose inbox shows it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub holder: Option<String>,
    pub prescription_id: String,
}

/// The change feed live inbox streams subscribe to.
#[derive(Debug, Clone)]
pub struct Changes {
    feed: broadcast::Sender<Changed>,
    /// Completes when the service stops; streams end then.
    ending: Signal,
}

impl Changes {
    pub fn new(ending: Signal) -> Self {
        Self {
            feed: broadcast::channel(1024).0,
            ending,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.feed.subscribe()
    }

    /// Completes when the service stops: a live stream must end then, or the graceful
    /// shutdown would wait for it forever.
    pub fn ending(&self) -> impl Future<Output = ()> + Send + use<> {
        self.ending.clone().wait()
    }

    /// Tells streams that `prescription_id` changed (nobody listening is fine).
    pub async fn announce(&self, store: &Store, prescription_id: &str) {
        if self.feed.receiver_count() == 0 {
            return;
        }
        let holder = match store.get(prescription_id).await {
            Ok(row) => row.and_then(|r| r.holder),
            Err(_) => None,
        };
        self.announce_for(holder, prescription_id);
    }

    /// The same when the holder is already known (a new prescription's target pharmacy).
    pub fn announce_for(&self, holder: Option<String>, prescription_id: &str) {
        let _ = self.feed.send(Changed {
            holder,
            prescription_id: prescription_id.to_owned(),
        });
    }
}

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
                if store
                    .insert_issued(&e)
                    .await
                    .map_err(HandlerError::transient)?
                {
                    changes.announce_for(e.target_pharmacy_org.clone(), &e.prescription_id);
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
    let builder = project(
        builder,
        &store,
        &changes,
        |store, e: PrescriptionDispensed| {
            Box::pin(async move {
                Ok(store
                    .record_dispensed(&e)
                    .await?
                    .then_some(e.prescription_id))
            })
        },
    )?;
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
