//! A running hixbus service: its HTTP API (with `/health`, `/ready` and `/metrics`), its
//! consumers, and one way to stop all of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use hixbus_access::Directory;
use hixbus_bus::consumer::ConsumerError;
use hixbus_bus::{Consumer, KafkaConfig, PublishError};
use hixbus_contracts::codec::Codec;
use hixbus_storage::Database;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{ApiError, BusSettings};

/// What a service is given rather than making itself: the bus, its database, who may call it.
/// `hixbus serve` makes them from the configuration; `hixbus up` and the tests share theirs.
#[derive(Debug, Clone)]
pub struct Deps {
    pub kafka: KafkaConfig,
    pub codec: Arc<Codec>,
    pub directory: Arc<Directory>,
    /// `None` for a service that keeps no tables.
    pub database: Option<Database>,
}

impl Deps {
    /// Makes what a deployed service is given from its configuration: the bus from `bus`, the
    /// database from `database_url` (migrated by the service itself), the organizations from
    /// their file (none: nobody may call its API).
    pub async fn connect(
        client_id: &str,
        bus: &BusSettings,
        database_url: Option<&SecretString>,
        organizations: Option<&Path>,
    ) -> Result<Self, StartupError> {
        let directory = match organizations {
            Some(path) => load_directory(path)?,
            None => Directory::default(),
        };
        let database = match database_url {
            Some(url) => Some(Database::connect(url.expose_secret()).await.map_err(|e| {
                StartupError::Invalid(format!(
                    "connecting to {}: {e}",
                    hixbus_storage::redact(url.expose_secret())
                ))
            })?),
            None => None,
        };
        Ok(Self {
            kafka: bus.kafka(client_id),
            codec: bus.codec()?,
            directory: Arc::new(directory),
            database,
        })
    }

    /// The database, for a service that cannot run without one.
    pub fn database(&self) -> Result<Database, StartupError> {
        self.database.clone().ok_or(StartupError::NoDatabase)
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("this service keeps tables: give it a database (database_url, HIXBUS_DATABASE_URL)")]
    NoDatabase,
    #[error("consumer: {0}")]
    Consumer(#[from] ConsumerError),
    #[error("publisher: {0}")]
    Publisher(#[from] PublishError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::config::ConfigError> for StartupError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<crate::config::ConnectError> for StartupError {
    fn from(e: crate::config::ConnectError) -> Self {
        Self::Invalid(e.0)
    }
}

/// A service, bound and ready to run.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    /// `/health` and `/ready`: answered whatever the load.
    probes: Router,
    app: Router,
    admission: crate::admission::Admission,
    consumers: Vec<Consumer>,
    /// Other servers of the service (a lab gateway's MLLP listener): each ends when `stopping`
    /// is cancelled.
    servers: Vec<futures::future::BoxFuture<'static, ()>>,
    stopping: CancellationToken,
    header_timeout: std::time::Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("listener", &self.listener)
            .field("consumers", &self.consumers.len())
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Probe {
    name: &'static str,
    database: Option<Database>,
}

async fn health(State(probe): State<Probe>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok", "service": probe.name }))
}

/// Ready: its database answers (a service without one is ready once it serves).
async fn ready(State(probe): State<Probe>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if let Some(db) = &probe.database {
        sqlx::query("SELECT 1")
            .execute(&db.pool)
            .await
            .map_err(|_| ApiError::unavailable("the database does not answer"))?;
    }
    Ok(axum::Json(
        json!({ "status": "ready", "service": probe.name }),
    ))
}

impl Service {
    /// Binds `listen` (port 0 picks a free port, as tests do) for `app` plus `/health`,
    /// `/ready` and `/metrics`, every route measured, `app`'s behind admission. `stopping` is cancelled when the service begins to stop: what must end then
    /// (live streams) listens to it.
    pub async fn bind(
        name: &'static str,
        listen: SocketAddr,
        app: Router,
        consumers: Vec<Consumer>,
        database: Option<Database>,
        stopping: CancellationToken,
    ) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartupError::Listen {
                addr: listen,
                source,
            })?;
        if let Some(db) = &database {
            crate::metrics::watch_pool(name, db);
        }
        let probes = Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(Probe { name, database });
        Ok(Self {
            name,
            listener,
            probes,
            app,
            admission: crate::admission::Admission::default(),
            consumers,
            servers: Vec::new(),
            stopping,
            header_timeout: crate::http::HEADER_TIMEOUT,
        })
    }

    /// Runs `server` beside the HTTP API, from `run_until` until the service stops: it must end
    /// once the `stopping` token given to [`Service::bind`] is cancelled, and is waited for.
    pub fn with_server(mut self, server: impl Future<Output = ()> + Send + 'static) -> Self {
        self.servers.push(Box::pin(server));
        self
    }

    /// Ships the service's audit log to the patients' access trail while it runs
    /// ([`crate::trail`]); a service without a database has no log and ships nothing.
    pub async fn with_audit_trail(self, deps: &Deps) -> Result<Self, StartupError> {
        let Some(db) = &deps.database else {
            return Ok(self);
        };
        let log = hixbus_storage::AuditLog::new(db.clone()).await?;
        let publisher = hixbus_bus::Publisher::new(&deps.kafka, deps.codec.clone())?;
        let shipper = crate::trail::ship(
            self.name,
            log,
            publisher,
            deps.directory.clone(),
            self.stopping.clone(),
        );
        Ok(self.with_server(shipper))
    }

    /// Other bounds on requests in flight than [`crate::admission`]'s (tests tighten them).
    pub fn with_admission(mut self, admission: crate::admission::Admission) -> Self {
        self.admission = admission;
        self
    }

    /// How long a client may take to send a request's headers (tests shorten it).
    pub fn with_header_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn url(&self) -> String {
        match self.listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(_) => "http://(unbound)".to_owned(),
        }
    }

    /// Serves and consumes until `stop` is cancelled, then drains: the server finishes its
    /// requests (live streams end), each consumer the record in hand, commits and leaves.
    pub async fn run_until(self, stop: CancellationToken) -> std::io::Result<()> {
        let Service {
            name,
            listener,
            probes,
            app,
            admission,
            consumers,
            servers,
            stopping,
            header_timeout,
        } = self;
        // Every route measured, shed requests too; the probes and /metrics outside admission.
        let app = crate::metrics::measured(probes.merge(admission.around(app)));
        let tasks = TaskTracker::new();
        for consumer in consumers {
            let stopping = stopping.clone();
            let group = consumer.group().to_owned();
            tasks.spawn(async move {
                if let Err(e) = consumer.run(stopping.cancelled_owned()).await {
                    tracing::error!(service = name, %group, error = %e, "consumer failed");
                }
            });
        }
        for server in servers {
            tasks.spawn(server);
        }
        tasks.close();
        let relay = {
            let stopping = stopping.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                stopping.cancel();
            })
        };
        let served = crate::http::serve(listener, app, header_timeout, stopping.clone()).await;
        // The server can also end by itself (an accept error): stop the consumers then too.
        stopping.cancel();
        tasks.wait().await;
        relay.abort();
        served
    }
}

/// The organizations file at `path`.
pub fn load_directory(path: &Path) -> Result<Directory, StartupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartupError::Invalid(format!("reading {}: {e}", path.display())))?;
    Directory::from_toml(&text)
        .map_err(|e| StartupError::Invalid(format!("organizations {}: {e}", path.display())))
}

/// Completes at Ctrl-C (SIGINT) or SIGTERM (what an orchestrator sends): every hixbus process
/// stops gracefully on either.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_answers_while_serving_ready_only_while_the_database_does_and_a_stop_drains() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let service = Service::bind(
            "example",
            "127.0.0.1:0".parse().unwrap(),
            Router::new().route("/hello", get(|| async { "hello" })),
            Vec::new(),
            Some(db.clone()),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let url = service.url();
        let stop = CancellationToken::new();
        let running = tokio::spawn(service.run_until(stop.clone()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{url}{path}")).send();

        let health = get("/health").await.unwrap();
        assert_eq!(health.status(), 200);
        let body: serde_json::Value = health.json().await.unwrap();
        assert_eq!(body["service"], "example");
        assert_eq!(get("/ready").await.unwrap().status(), 200);
        assert_eq!(get("/hello").await.unwrap().text().await.unwrap(), "hello");

        db.pool.close().await;
        let not_ready = get("/ready").await.unwrap();
        assert_eq!(not_ready.status(), 503);
        let body: serde_json::Value = not_ready.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        assert_eq!(get("/health").await.unwrap().status(), 200);

        stop.cancel();
        running.await.unwrap().unwrap();
        assert!(get("/health").await.is_err(), "stopped serving");
    }

    /// At capacity a service sheds what it cannot take, and still answers its probes and
    /// `/metrics` (an orchestrator must not restart a service for being busy).
    #[tokio::test]
    async fn at_capacity_the_probes_and_metrics_still_answer_and_the_excess_is_shed() {
        let release = Arc::new(tokio::sync::Notify::new());
        let waiting = release.clone();
        let service = Service::bind(
            "example",
            "127.0.0.1:0".parse().unwrap(),
            Router::new()
                .route(
                    "/wait",
                    get(move || {
                        let release = waiting.clone();
                        async move {
                            release.notified().await;
                            "done"
                        }
                    }),
                )
                .route("/now", get(|| async { "now" })),
            Vec::new(),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap()
        .with_admission(crate::admission::Admission::new(1, 5));
        let url = service.url();
        let stop = CancellationToken::new();
        let running = tokio::spawn(service.run_until(stop.clone()));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let held = tokio::spawn(http.get(format!("{url}/wait")).send());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let shed = loop {
            // Served until the held request has the one slot.
            let r = http.get(format!("{url}/now")).send().await.unwrap();
            if r.status() != 200 || std::time::Instant::now() > deadline {
                break r;
            }
        };
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers()["retry-after"], "1");
        for probe in ["/health", "/ready", "/metrics"] {
            let r = http.get(format!("{url}{probe}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{probe} at capacity");
        }
        release.notify_waiters();
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        stop.cancel();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_cut_off_and_handlers_see_the_clients_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let service = Service::bind(
            "example",
            "127.0.0.1:0".parse().unwrap(),
            Router::new().route(
                "/who",
                get(
                    |crate::ClientAddr(addr): crate::ClientAddr| async move { format!("{addr:?}") },
                ),
            ),
            Vec::new(),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap()
        .with_header_timeout(std::time::Duration::from_secs(1));
        let addr = service.url().trim_start_matches("http://").to_owned();
        let stop = CancellationToken::new();
        let running = tokio::spawn(service.run_until(stop.clone()));

        let mut whole = tokio::net::TcpStream::connect(&addr).await.unwrap();
        whole
            .write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        whole.read_to_string(&mut answer).await.unwrap();
        assert!(answer.contains("Some(127.0.0.1)"), "{answer}");

        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let cut = loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break started.elapsed();
            }
            let mut probe = [0u8; 64];
            match tokio::time::timeout(std::time::Duration::from_millis(1), slow.read(&mut probe))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
                Ok(Ok(_)) | Err(_) => {}
            }
            assert!(started.elapsed().as_secs() < 15, "never cut off");
        };
        assert!(cut.as_millis() >= 800, "cut at {cut:?}");
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}
