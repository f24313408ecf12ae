//! `GET /insurer/feed` (a page after a cursor) and `GET /insurer/feed/stream` (server-sent
//! events from a cursor on, each with its cursor as the event id, so a browser's `EventSource`
//! resumes by itself). An insurer reads only its own feed; every entry read or delivered is
//! audited.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use hixbus_access::{Action, Caller, Directory, Organization};
use hixbus_service::changes::Changed;
use hixbus_service::{ApiError, JsonQuery, PerKeyLimit, Permit};
use hixbus_storage::AuditLog;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::feed::{Changes, Entry, Feed};
use hixbus_service::ReadModelError;

/// The API only reads; a request body has no use here.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;
/// Live streams one insurer may hold open.
pub const STREAMS_PER_INSURER: usize = 16;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub feed: Feed,
    pub changes: Changes,
    pub audit: AuditLog,
    pub streams: Arc<PerKeyLimit>,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

fn failed(e: ReadModelError) -> ApiError {
    tracing::error!(error = %e, "insurer feed failed");
    ApiError::unavailable("the feed is unavailable; retry from the same cursor")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    /// The cursor of the last entry read (0, or absent: from the start).
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
    /// `newest`: the latest entries first, paged down with `before` (a screen); `oldest`, the
    /// default, after `after` in order (a reader that must miss nothing).
    #[serde(default)]
    order: hixbus_service::ListOrder,
    /// With `order=newest`: the `next` of the previous page.
    #[serde(default)]
    before: Option<i64>,
}

fn check_after(after: Option<i64>) -> Result<i64, ApiError> {
    match after.unwrap_or(0) {
        n if n >= 0 => Ok(n),
        _ => Err(ApiError::bad_request("after is a cursor: 0 or more")),
    }
}

/// One page of the caller's feed after `after`; `next` is the cursor to ask after next time
/// (the last entry's, or `after` again when there was none).
pub async fn page(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<FeedParams>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ReadInsurerFeed)?;
    let after = check_after(params.after)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let newest = params.order == hixbus_service::ListOrder::Newest;
    let entries = if newest {
        state.feed.latest(&org.id, params.before, limit).await
    } else {
        state.feed.page(&org.id, after, limit).await
    }
    .map_err(failed)?;
    state
        .audit
        .record_all(
            &org.id,
            "insurer.feed",
            entries
                .iter()
                .map(|e| (e.subject_id.as_str(), e.patient_ref.as_str())),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit write failed; nothing shown");
            ApiError::unavailable("the feed is unavailable; retry from the same cursor")
        })?;
    let items: Vec<Value> = entries.iter().map(Entry::item).collect();
    let next = match (newest, entries.last()) {
        // Newest first: the page before this one's oldest entry; none past the first entry.
        (true, Some(last)) if entries.len() == limit as usize => json!(last.seq),
        (true, _) => Value::Null,
        (false, last) => json!(last.map_or(after, |e| e.seq)),
    };
    Ok(Json(
        json!({ "insurer": org.id, "entries": items, "next": next }),
    ))
}

async fn audit(
    audit: &AuditLog,
    org: &Organization,
    action: &str,
    entry: &Entry,
) -> Result<(), sqlx::Error> {
    audit
        .record(&org.id, action, &entry.subject_id, &entry.patient_ref)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "audit write failed; nothing shown"))
}

/// Where a stream starts: `Last-Event-ID` (a reconnecting `EventSource`) wins over `after`.
fn stream_start(headers: &HeaderMap, after: Option<i64>) -> Result<i64, ApiError> {
    match headers.get("last-event-id") {
        Some(id) => id
            .to_str()
            .ok()
            .and_then(|id| id.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID is a cursor: 0 or more")),
        None => check_after(after),
    }
}

/// What one open stream holds between events.
struct Reader {
    feed: Feed,
    audit: AuditLog,
    org: Organization,
    receiver: broadcast::Receiver<Changed<Entry>>,
    after: i64,
    pending: VecDeque<Entry>,
    _permit: Permit,
}

impl Reader {
    /// The next event: the next entry after the cursor, waiting for one if there is none.
    /// `None` ends the stream (the service stops, or the feed or audit failed: the client
    /// reconnects from its last event id and misses nothing).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                audit(&self.audit, &self.org, "insurer.stream", &entry)
                    .await
                    .ok()?;
                self.after = entry.seq;
                return Some(
                    Event::default()
                        .id(entry.seq.to_string())
                        .event(entry.kind.clone())
                        .data(entry.item().to_string()),
                );
            }
            match self.feed.page(&self.org.id, self.after, DEFAULT_PAGE).await {
                Ok(entries) if !entries.is_empty() => {
                    self.pending.extend(entries);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "insurer feed failed; stream ended");
                    return None;
                }
            }
            // Caught up: wait for news of this insurer's feed (or a sign some were missed),
            // then read from the cursor again.
            loop {
                match self.receiver.recv().await {
                    Ok(Changed::Row(entry)) if entry.insurer_org == self.org.id => break,
                    Ok(Changed::Row(_)) => continue,
                    Ok(Changed::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }
}

pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonQuery(params): JsonQuery<FeedParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let org = caller.require(Action::ReadInsurerFeed)?.clone();
    let after = stream_start(&headers, params.after)?;
    let Some(permit) = state.streams.try_acquire(&org.id) else {
        return Err(ApiError::too_many(
            "too_many_streams",
            format!(
                "at most {STREAMS_PER_INSURER} live streams at once per insurer; close one first"
            ),
            std::time::Duration::from_secs(5),
        ));
    };
    // Subscribed before the first read: an entry recorded meanwhile is heard of.
    let reader = Reader {
        receiver: state.changes.subscribe(),
        feed: state.feed.clone(),
        audit: state.audit.clone(),
        org,
        after,
        pending: VecDeque::new(),
        _permit: permit,
    };
    let events = futures::stream::unfold(reader, |mut reader| async move {
        let event = reader.next().await?;
        Some((Ok(event), reader))
    })
    .take_until(state.changes.ending());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
