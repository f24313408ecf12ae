//! Live lists: a service's event stream, passed through to the page's `EventSource` under the
//! console's origin (the session cookie authenticates it; the service sees the organization's
//! key and audits each delivery as it does for any client). The page only uses an event as a
//! signal to fetch its list again, so the stream's content is the service's own.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::AppState;
use crate::layout;
use crate::security::Member;
use crate::upstream::Api;

/// How often an open stream checks that its session still stands.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn pass_through(
    state: &AppState,
    member: &Member,
    api: Api,
    segments: &[&str],
    query: &[(&str, &str)],
) -> Response {
    match state
        .upstream
        .stream(&member.key, api, segments, query)
        .await
    {
        Ok(stream) => {
            // It ends when the service stops, and when the session does (signed out, idle,
            // at its limit): an open tab does not keep receiving after its session is over.
            let stopping = state.stopping.clone();
            let (sessions, id) = (state.sessions.clone(), member.session.id.clone());
            let session_over = async move {
                loop {
                    tokio::time::sleep(SESSION_CHECK).await;
                    if sessions.peek(&id).is_none() {
                        return;
                    }
                }
            };
            let body = stream.take_until(async move {
                tokio::select! {
                    () = stopping.cancelled() => {}
                    () = session_over => {}
                }
            });
            (
                [
                    (header::CONTENT_TYPE, "text/event-stream"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                Body::from_stream(body),
            )
                .into_response()
        }
        Err(e) => {
            let status = layout::status_of(&e);
            let status = if status == StatusCode::UNAUTHORIZED {
                StatusCode::FORBIDDEN
            } else {
                status
            };
            (status, e.to_string()).into_response()
        }
    }
}
