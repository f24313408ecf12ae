//! The change feed live screens listen to, across replicas.
//!
//! A row changes on whichever replica projected its event or served the request, but a screen
//! is connected to whichever replica its load balancer chose. So on PostgreSQL a change goes out
//! as a `NOTIFY` on the service's channel, after its transaction committed, and every replica
//! `LISTEN`s and passes it on to its own screens. On SQLite (the single-process demo) it goes
//! straight to this process's screens.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use hixbus_access::Organization;
use hixbus_storage::{AuditLog, Backend, Database};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::Permit;
use sqlx::AnyPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Where a changed row is read back from, by the key announced.
pub trait Source: Clone + Send + Sync + 'static {
    type Row: Debug + Send + Sync + 'static;
    type Error: std::fmt::Display + Send;

    fn load(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Self::Row>, Self::Error>> + Send;
}

/// What a screen hears.
#[derive(Debug)]
pub enum Changed<R> {
    /// A row changed: as it now reads, so every screen showing it skips the re-read. Each
    /// screen checks it may see it.
    Row(Arc<R>),
    /// Changes may have been missed (the notification connection dropped, or a read failed):
    /// screens reload.
    Missed,
}

impl<R> Clone for Changed<R> {
    fn clone(&self) -> Self {
        match self {
            Changed::Row(row) => Changed::Row(row.clone()),
            Changed::Missed => Changed::Missed,
        }
    }
}

/// The change feed of one replica.
#[derive(Debug)]
pub struct Changes<S: Source> {
    feed: broadcast::Sender<Changed<S::Row>>,
    source: S,
    /// Completes when the service stops; streams and the listener end then.
    ending: CancellationToken,
    /// On PostgreSQL: where changes are announced to every replica, and on which channel.
    relay: Option<(AnyPool, &'static str)>,
}

impl<S: Source> Clone for Changes<S> {
    fn clone(&self) -> Self {
        Self {
            feed: self.feed.clone(),
            source: self.source.clone(),
            ending: self.ending.clone(),
            relay: self.relay.clone(),
        }
    }
}

impl<S: Source> Changes<S> {
    /// This process only (SQLite, or tests without a database).
    pub fn local(source: S, ending: CancellationToken) -> Self {
        Self {
            feed: broadcast::channel(1024).0,
            source,
            ending,
            relay: None,
        }
    }

    /// The feed for `db`: on PostgreSQL it listens on `channel` before returning, so no change
    /// announced after startup is missed. `channel` must be the service's own.
    pub async fn start(
        db: &Database,
        source: S,
        channel: &'static str,
        ending: CancellationToken,
    ) -> Result<Self, sqlx::Error> {
        let mut changes = Self::local(source, ending);
        if db.backend == Backend::Postgres {
            let mut listener = PgListener::connect(db.url()).await?;
            listener.listen(channel).await?;
            tokio::spawn(relay(listener, changes.clone()));
            changes.relay = Some((db.pool.clone(), channel));
        }
        Ok(changes)
    }

    /// The PostgreSQL channel a statement may notify itself (`pg_notify`, delivered at its
    /// commit) instead of calling [`Changes::announce`] afterwards; `None` on SQLite.
    pub fn channel(&self) -> Option<&'static str> {
        self.relay.as_ref().map(|(_, channel)| *channel)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Changed<S::Row>> {
        self.feed.subscribe()
    }

    /// Completes when the service stops: a live stream must end then, or the graceful
    /// shutdown would wait for it forever.
    pub fn ending(&self) -> impl Future<Output = ()> + Send + use<S> {
        self.ending.clone().cancelled_owned()
    }

    /// Tells every replica's screens that `key` changed. Call it after the change committed.
    pub async fn announce(&self, key: &str) {
        if let Some((pool, channel)) = &self.relay {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(*channel)
                .bind(key)
                .execute(pool)
                .await;
            match sent {
                Ok(_) => return,
                // Other replicas' screens miss this one; this replica's still hear it.
                Err(e) => tracing::warn!(error = %e, "change notification failed"),
            }
        }
        self.tell_screens(key).await;
    }

    /// Passes a change to this replica's screens (nobody listening is fine).
    async fn tell_screens(&self, key: &str) {
        if self.feed.receiver_count() == 0 {
            return;
        }
        match self.source.load(key).await {
            Ok(Some(row)) => {
                let _ = self.feed.send(Changed::Row(Arc::new(row)));
            }
            Ok(None) => {}
            // The screens cannot be told what changed; they reload.
            Err(e) => {
                tracing::warn!(error = %e, key, "changed row unreadable; screens told to reload");
                let _ = self.feed.send(Changed::Missed);
            }
        }
    }
}

/// What a screen is sent of one changed row it may see.
#[derive(Debug)]
pub struct Shown {
    /// The server-sent event's name.
    pub event: &'static str,
    pub data: String,
    /// What the audit line names: the row's id, and whose data it is.
    pub subject_id: String,
    pub patient_ref: String,
}

/// A screen could not be shown a change (what it depends on could not be read or audited):
/// it is told to reload its list instead, which answers 503 while that lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload;

impl<S: Source> Changes<S> {
    /// One screen's live stream (server-sent events) for `org`: every changed row `show` lets
    /// it see, audited as `action` before it is sent; `resync` when changes may have been
    /// missed (the screen reloads its list). It holds `permit` while open, and ends when the
    /// service stops.
    pub fn screen<F>(
        &self,
        audit: AuditLog,
        org: Organization,
        action: &'static str,
        permit: Permit,
        show: F,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<S, F>>
    where
        F: Fn(&Organization, &S::Row) -> Option<Shown> + Send + Sync + 'static,
    {
        self.screen_async(audit, org, action, permit, move |org, row| {
            std::future::ready(Ok(show(&org, &row)))
        })
    }

    /// [`Changes::screen`] for a `show` that has to ask something first (what the patient's
    /// consent lets this organization see, at the moment it is sent).
    pub fn screen_async<F, Fut>(
        &self,
        audit: AuditLog,
        org: Organization,
        action: &'static str,
        permit: Permit,
        show: F,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<S, F, Fut>>
    where
        F: Fn(Organization, Arc<S::Row>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Shown>, Reload>> + Send,
    {
        let screen = Screen {
            receiver: self.subscribe(),
            audit,
            org,
            action,
            _permit: permit,
            show,
            ready: VecDeque::new(),
            closed: false,
        };
        let events = futures::stream::unfold(screen, |mut screen| async move {
            loop {
                if let Some(event) = screen.ready.pop_front() {
                    return Some((Ok(event), screen));
                }
                if screen.closed {
                    return None;
                }
                screen.next_run().await;
            }
        })
        .take_until(self.ending());
        Sse::new(events).keep_alive(KeepAlive::default())
    }
}

/// The most changes one screen takes from its feed at once (and audits in one statement).
const SCREEN_RUN: usize = 64;

/// One open live stream.
struct Screen<R, F> {
    receiver: broadcast::Receiver<Changed<R>>,
    audit: AuditLog,
    org: Organization,
    action: &'static str,
    /// Held while the stream is open: the organization's share of live streams.
    _permit: Permit,
    show: F,
    /// Events decided and audited, waiting to be sent.
    ready: VecDeque<Event>,
    /// The feed ended: send what is ready, then end.
    closed: bool,
}

impl<R, F, Fut> Screen<R, F>
where
    R: Send + Sync,
    F: Fn(Organization, Arc<R>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Option<Shown>, Reload>> + Send,
{
    /// Waits for the next change, takes every change already waiting after it (a screen that
    /// has fallen behind catches up a run at a time: one audit statement per run, not per
    /// row), and makes them ready in order.
    async fn next_run(&mut self) {
        let mut received = vec![self.receiver.recv().await];
        while received.len() < SCREEN_RUN {
            match self.receiver.try_recv() {
                Ok(change) => received.push(Ok(change)),
                Err(TryRecvError::Lagged(n)) => received.push(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => received.push(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => break,
            }
        }
        let mut shown = Vec::new();
        for change in received {
            match change {
                Ok(Changed::Row(row)) => match (self.show)(self.org.clone(), row).await {
                    Ok(Some(one)) => shown.push(one),
                    Ok(None) => {}
                    Err(Reload) => return self.resync(shown).await,
                },
                // Too slow to keep up, or changes were missed: the screen reloads.
                Ok(Changed::Missed) | Err(RecvError::Lagged(_)) => {
                    return self.resync(shown).await;
                }
                Err(RecvError::Closed) => {
                    self.closed = true;
                    break;
                }
            }
        }
        // Delivered, or the screen was told to reload: either way the run is dealt with.
        let _ = self.deliver(shown).await;
    }

    /// Delivers what was shown so far, then tells the screen to reload; the rest of the run
    /// is what the reload brings.
    async fn resync(&mut self, shown: Vec<Shown>) {
        if self.deliver(shown).await {
            self.ready.push_back(resync());
        }
    }

    /// Nothing is delivered unaudited: if the audit cannot be written, the screen is told to
    /// reload instead (through its list, which audits or answers 503), so it neither sees
    /// unaudited data nor silently misses the change. False when it was told to reload.
    async fn deliver(&mut self, shown: Vec<Shown>) -> bool {
        if shown.is_empty() {
            return true;
        }
        let rows = shown
            .iter()
            .map(|s| (s.subject_id.as_str(), s.patient_ref.as_str()));
        if let Err(e) = self.audit.record_all(&self.org.id, self.action, rows).await {
            tracing::error!(error = %e, rows = shown.len(), "delivery audit failed; screen told to reload");
            self.ready.push_back(resync());
            return false;
        }
        self.ready.extend(
            shown
                .into_iter()
                .map(|s| Event::default().event(s.event).data(s.data)),
        );
        true
    }
}

/// Tells a screen to reload its list.
pub fn resync() -> Event {
    Event::default().event("resync").data("{}")
}

/// Passes every replica's changes to this replica's screens until the service stops.
async fn relay<S: Source>(mut listener: PgListener, changes: Changes<S>) {
    let ending = changes.ending();
    tokio::pin!(ending);
    loop {
        let received = tokio::select! {
            () = &mut ending => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => changes.tell_screens(notification.payload()).await,
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
