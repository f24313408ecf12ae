//! Admission: a service offered more than it can carry answers the excess at once instead of
//! queueing it until every request is late (at 2,000 prescriptions/s the clinic gateway kept
//! accepting until it ran out of file descriptors). Requests in flight are bounded for the whole
//! service (503 with `Retry-After`: nothing took effect, the same request may be sent again, and
//! clinics retry idempotently) and per client (429 with `Retry-After`), so one organization's
//! burst cannot take all of a service. A client is its credentials (the `Authorization`
//! header, digested: the map keeps no secret), or its address without. Probes and `/metrics` are
//! outside it (the service wires them around it), and a live stream holds its slot only until
//! its headers are sent, so open streams never crowd out requests.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::limits::PerKeyLimit;

/// Requests one service handles at once. What is admitted waits behind what is in flight
/// (Little's law: in flight / throughput); at the flow's saturation on two cores, about 650
/// prescriptions/s, 512 in flight made an admitted request wait 800 ms at p99 and 48 makes it
/// 80 ms at the median and 127 ms at p99 (docs/performance.md). A service with more cores or
/// replicas carries more at once.
pub const MAX_IN_FLIGHT: usize = 48;
/// Requests one client has in flight at once: two thirds of the service's, so others always have
/// room, and enough for an integration engine sending in parallel.
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 32;
/// What the excess is told to wait: long enough for a burst to drain.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bounds, shared by every request of one service.
#[derive(Debug, Clone)]
pub struct Admission {
    in_flight: Arc<Semaphore>,
    per_client: Arc<PerKeyLimit>,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_CLIENT)
    }
}

impl Admission {
    pub fn new(max_in_flight: usize, max_per_client: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            per_client: PerKeyLimit::new(max_per_client),
        }
    }

    /// `app` with every request admitted or shed.
    pub fn around(self, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(self, admit))
    }
}

async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let Some(_client) = admission.per_client.try_acquire(&client_key(&request)) else {
        return shed(ApiError::too_many(
            "too_many_requests",
            format!(
                "this client has {} requests in flight, the most one client may; send this one again later",
                admission.per_client.max()
            ),
            RETRY_AFTER,
        ));
    };
    let Ok(_slot) = admission.in_flight.clone().try_acquire_owned() else {
        return shed(
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the service is at capacity; nothing of this request took effect, send it again later",
            )
            .retry_after(RETRY_AFTER),
        );
    };
    // The slots go back when the response's head is ready: a stream's body is not waited for.
    next.run(request).await
}

fn shed(error: ApiError) -> Response {
    tracing::debug!(status = error.status.as_u16(), "request shed");
    error.into_response()
}

fn client_key(request: &Request) -> String {
    if let Some(credentials) = request.headers().get(header::AUTHORIZATION) {
        let digest = Sha256::digest(credentials.as_bytes());
        return format!("key:{}", hex::encode(&digest[..16]));
    }
    match request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
    {
        Some(ConnectInfo(addr)) => format!("addr:{}", addr.ip()),
        None => "anonymous".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    /// A router whose `/wait` holds its request until `release` is notified.
    fn app(admission: Admission, release: Arc<Notify>) -> Router {
        admission.around(
            Router::new()
                .route(
                    "/wait",
                    get(move || {
                        let release = release.clone();
                        async move {
                            release.notified().await;
                            "done"
                        }
                    }),
                )
                .route("/now", get(|| async { "now" })),
        )
    }

    fn request(path: &str, key: &str) -> Request {
        Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    }

    async fn until_waiting(
        app: &Router,
        n: usize,
        key: &str,
    ) -> Vec<tokio::task::JoinHandle<Response>> {
        let held: Vec<_> = (0..n)
            .map(|_| {
                let (app, request) = (app.clone(), request("/wait", key));
                tokio::spawn(async move { app.oneshot(request).await.unwrap() })
            })
            .collect();
        // Each has taken its slots once it is waiting on the handler.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        held
    }

    #[tokio::test]
    async fn the_excess_is_shed_at_once_with_retry_after_and_the_service_recovers() {
        let release = Arc::new(Notify::new());
        let app = app(Admission::new(2, 2), release.clone());
        let mut held = until_waiting(&app, 1, "clinic-a").await;
        held.extend(until_waiting(&app, 1, "clinic-b").await);

        let shed = app
            .clone()
            .oneshot(request("/now", "clinic-c"))
            .await
            .unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(shed.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "overloaded", "{body}");

        release.notify_waiters();
        for h in held {
            assert_eq!(
                h.await.unwrap().status(),
                StatusCode::OK,
                "admitted, then served"
            );
        }
        let again = app.oneshot(request("/now", "clinic-c")).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK, "load gone, served again");
    }

    #[tokio::test]
    async fn one_client_cannot_take_the_others_share() {
        let release = Arc::new(Notify::new());
        let app = app(Admission::new(10, 2), release.clone());
        let held = until_waiting(&app, 2, "busy-clinic").await;

        let own = app
            .clone()
            .oneshot(request("/now", "busy-clinic"))
            .await
            .unwrap();
        assert_eq!(own.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(own.headers()[header::RETRY_AFTER], "1");
        let other = app
            .clone()
            .oneshot(request("/now", "quiet-pharmacy"))
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK);

        release.notify_waiters();
        for h in held {
            assert_eq!(h.await.unwrap().status(), StatusCode::OK);
        }
        let later = app.oneshot(request("/now", "busy-clinic")).await.unwrap();
        assert_eq!(later.status(), StatusCode::OK);
    }
}
