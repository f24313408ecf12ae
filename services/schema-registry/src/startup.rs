//! Builds the registry so that `hixbus registry serve`, `hixbus up` and the tests all run the
//! same thing; tests bind port 0 and read the address back.

use std::future::Future;
use std::net::SocketAddr;

use axum::{Router, middleware};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::auth;
use crate::config::RegistryConfig;
use crate::routes::{AppState, router};
use crate::service::Registry;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the registry database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct RegistryServer {
    listener: TcpListener,
    app: Router,
    addr: SocketAddr,
}

impl RegistryServer {
    /// Opens (and migrates) the database and binds the listener; serving starts with
    /// [`RegistryServer::run_until`].
    pub async fn build(config: RegistryConfig) -> Result<Self, StartupError> {
        let store = Store::connect(&config.database_url).await?;
        store.migrate().await?;
        let registry = Registry::new(store, config.default_compatibility);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Self {
            listener,
            app: app(
                registry,
                config.max_body_bytes,
                config.organizations.map(|directory| auth::Guard {
                    directory,
                    anonymous_reads: config.anonymous_reads,
                }),
            ),
            addr,
        })
    }

    /// Changes the served application: `hixbus registry serve` adds `/metrics` and request
    /// metrics this crate does not know about.
    pub fn map_app(mut self, f: impl FnOnce(Router) -> Router) -> Self {
        self.app = f(self.app);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL clients use, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The registry's HTTP application, for embedding in another server.
pub fn app(registry: Registry, max_body_bytes: usize, guard: Option<auth::Guard>) -> Router {
    let app = router(AppState {
        registry,
        max_body_bytes,
    });
    let app = match guard {
        Some(guard) => app.layer(middleware::from_fn_with_state(guard, auth::require)),
        None => {
            tracing::warn!(
                "schema registry without an organizations directory: anyone may change it"
            );
            app
        }
    };
    app.layer(TraceLayer::new_for_http())
}
