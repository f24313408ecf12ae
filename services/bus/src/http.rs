//! A hixbus service with an HTTP API and a consumer that feeds it: bound, served and stopped
//! the same way for every service.

use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::consumer::ConsumerError;
use crate::{Consumer, shutdown};

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("consumer: {0}")]
    Consumer(#[from] ConsumerError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// An HTTP API and its consumer, bound and ready to run.
#[derive(Debug)]
pub struct HttpService {
    listener: TcpListener,
    app: Router,
    consumer: Consumer,
    closing: Vec<shutdown::Trigger>,
}

impl HttpService {
    /// Binds `listen` (port 0 picks a free port, as tests do).
    pub async fn bind(
        listen: SocketAddr,
        app: Router,
        consumer: Consumer,
    ) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartupError::Listen {
                addr: listen,
                source,
            })?;
        Ok(Self {
            listener,
            app,
            consumer,
            closing: Vec::new(),
        })
    }

    /// Also fires `trigger` when shutdown begins. A graceful shutdown waits for every open
    /// connection, and a live stream (server-sent events) never ends by itself: routes that
    /// stream end their streams on this trigger's signal, or the service could never stop.
    pub fn closing(mut self, trigger: shutdown::Trigger) -> Self {
        self.closing.push(trigger);
        self
    }

    pub fn url(&self) -> String {
        match self.listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(_) => "http://(unbound)".to_owned(),
        }
    }

    /// Serves and consumes until `shutdown`, then drains both.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (listener, app, closing) = (self.listener, self.app, self.closing);
        let shutdown = async move {
            shutdown.await;
            for trigger in &closing {
                trigger.fire();
            }
        };
        shutdown::run_beside(
            self.consumer,
            |signal| async move {
                // Server-sent events are a run of small writes: with Nagle's algorithm on, each
                // one written while the previous is unacknowledged waits for the client's
                // delayed ACK (40 ms on Linux).
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                });
                // Handlers see the client's address (`ConnectInfo`), e.g. to limit per client.
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal.wait())
                    .await
            },
            shutdown,
        )
        .await
    }
}
