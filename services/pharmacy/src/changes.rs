//! The change feed live inbox screens listen to, across replicas.
//!
//! A prescription changes on whichever replica projected its event or served the claim or the
//! dispense, but a pharmacy's screen is connected to whichever replica its load balancer chose.
//! So on PostgreSQL a change goes out as a `NOTIFY` on one channel, after its transaction
//! committed, and every replica `LISTEN`s and passes it on to its own screens. On SQLite (the
//! single-process demo) it goes straight to this process's screens.

use std::sync::Arc;
use std::time::Duration;

use hixbus_storage::{Backend, Database};
use sqlx::AnyPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{PrescriptionRow, Store};

/// The PostgreSQL channel changes travel on; the payload is the prescription id.
const CHANNEL: &str = "hixbus_pharmacy_changes";

/// What a screen hears.
#[derive(Debug, Clone)]
pub enum Changed {
    /// A prescription changed: as it now reads, so every screen showing it skips the re-read.
    /// `row.holder` is the pharmacy whose inbox shows it, if any.
    Prescription(Arc<PrescriptionRow>),
    /// Changes may have been missed (the notification connection dropped): screens reload.
    Missed,
}

/// The change feed of one replica.
#[derive(Debug, Clone)]
pub struct Changes {
    feed: broadcast::Sender<Changed>,
    /// Completes when the service stops; streams and the listener end then.
    ending: CancellationToken,
    /// On PostgreSQL: where changes are announced to every replica.
    relay: Option<AnyPool>,
}

impl Changes {
    /// This process only (SQLite, or tests without a database).
    pub fn local(ending: CancellationToken) -> Self {
        Self {
            feed: broadcast::channel(1024).0,
            ending,
            relay: None,
        }
    }

    /// The feed for `db`: on PostgreSQL it listens before returning, so no change announced
    /// after startup is missed.
    pub async fn start(
        db: &Database,
        store: &Store,
        ending: CancellationToken,
    ) -> Result<Self, sqlx::Error> {
        let mut changes = Self::local(ending);
        if db.backend == Backend::Postgres {
            let mut listener = PgListener::connect(db.url()).await?;
            listener.listen(CHANNEL).await?;
            tokio::spawn(relay(listener, changes.clone(), store.clone()));
            changes.relay = Some(db.pool.clone());
        }
        Ok(changes)
    }

    /// The PostgreSQL channel a statement may notify itself (`pg_notify`, delivered at its
    /// commit) instead of calling [`Changes::announce`] afterwards; `None` on SQLite.
    pub fn channel(&self) -> Option<&'static str> {
        self.relay.as_ref().map(|_| CHANNEL)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.feed.subscribe()
    }

    /// Completes when the service stops: a live stream must end then, or the graceful
    /// shutdown would wait for it forever.
    pub fn ending(&self) -> impl Future<Output = ()> + Send + use<> {
        self.ending.clone().cancelled_owned()
    }

    /// Tells every replica's screens that `prescription_id` changed. Call it after the change
    /// committed.
    pub async fn announce(&self, store: &Store, prescription_id: &str) {
        if let Some(pool) = &self.relay {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(prescription_id)
                .execute(pool)
                .await;
            match sent {
                Ok(_) => return,
                // Other replicas' screens miss this one; this replica's still hear it.
                Err(e) => tracing::warn!(error = %e, "change notification failed"),
            }
        }
        self.tell_screens(store, prescription_id).await;
    }

    /// Passes a change to this replica's screens (nobody listening is fine).
    async fn tell_screens(&self, store: &Store, prescription_id: &str) {
        if self.feed.receiver_count() == 0 {
            return;
        }
        match store.get(prescription_id).await {
            Ok(Some(row)) => {
                let _ = self.feed.send(Changed::Prescription(Arc::new(row)));
            }
            Ok(None) => {}
            // The screens cannot be told what changed; they reload.
            Err(_) => {
                let _ = self.feed.send(Changed::Missed);
            }
        }
    }
}

/// Passes every replica's changes to this replica's screens until the service stops.
async fn relay(mut listener: PgListener, changes: Changes, store: Store) {
    let ending = changes.ending();
    tokio::pin!(ending);
    loop {
        let received = tokio::select! {
            () = &mut ending => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => changes.tell_screens(&store, notification.payload()).await,
            // The connection dropped and was re-established: what came meanwhile is lost.
            Ok(None) => {
                let _ = changes.feed.send(Changed::Missed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "change listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
