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
            let stopping = state.stopping.clone();
            let body = stream.take_until(async move { stopping.cancelled().await });
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
