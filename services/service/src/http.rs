//! The HTTP server every service runs: axum's router on hyper, with what `axum::serve` leaves
//! out. A request's headers must arrive within [`HEADER_TIMEOUT`] (hyper enforces it only with a
//! timer, which `axum::serve` does not give it): a client trickling its headers a byte at a time
//! (slowloris) no longer holds a connection for ever. Connections are also bounded in number.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How long a client may take to send a request's headers. hyper counts it from when it
/// starts waiting for a request, so it also closes a keep-alive connection idle that long (the
/// client opens another): 30 s, hyper's own default, keeps that rare.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one service holds open at once; beyond that, new ones wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// Serves `app` on `listener` until `stopping` is cancelled, then lets every open connection
/// finish its requests (live streams end on the same token) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stopping: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let result = loop {
        let slot = tokio::select! {
            () = stopping.cancelled() => break Ok(()),
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break Ok(()) };
        let accepted = tokio::select! {
            () = stopping.cancelled() => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: wait and go on, as axum does.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Server-sent events are a run of small writes: with Nagle's algorithm on, each one
        // written while the previous is unacknowledged waits for the client's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            // Handlers see the client's address (`ConnectInfo`), e.g. to limit per client.
            let service = app.map_request(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, %peer, "connection ended");
                    }
                }
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    };
    connections.close();
    connections.wait().await;
    result
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
