//! The consoles: the pages pharmacists, clinic staff and the other users work in all day.
//!
//! One web service in front of the services' APIs, rather than pages in each service: one
//! origin for the session cookie and the Content-Security-Policy, one sign-in, one place for the
//! templates and their two languages, and the services keep a JSON-only surface. Pages are
//! rendered on the server (maud, compiled with the code); a small script (`assets/live.js`)
//! keeps lists live over the services' own event streams. docs/consoles.md explains the design.

pub mod clinic;
pub mod config;
pub mod cookies;
pub mod i18n;
pub mod insurer;
pub mod layout;
pub mod live;
pub mod operator;
pub mod patient;
pub mod pharmacy;
pub mod security;
pub mod session;
pub mod signin;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hixbus_access::Directory;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};

pub use config::Config;

/// The service's name (health answers, logs, `hixbus serve web`).
pub const NAME: &str = "web";

/// Form posts are a few fields; a dispensing of a long prescription is the largest.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// The patients' OpenID Connect provider and this service's client id there.
#[derive(Debug, Clone)]
pub struct Oidc {
    pub issuer: String,
    pub audience: String,
    /// Its endpoints, read from its discovery document at the first sign-in and kept.
    pub provider: Arc<tokio::sync::OnceCell<patient::Provider>>,
}

/// What every page handler is given.
#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub sessions: session::Sessions,
    pub upstream: upstream::Upstream,
    pub secure: bool,
    /// The patients' sign-in provider, when patients may sign in here.
    pub oidc: Option<Oidc>,
    /// Where browsers reach this service, when set (see `Config::public_url`).
    pub public_url: Option<String>,
    /// Ends the live streams when the service begins to stop (graceful shutdown waits for
    /// every open response).
    pub stopping: CancellationToken,
}

pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let upstream = upstream::Upstream::new(&config).map_err(StartupError::Invalid)?;
    if config.session_idle_minutes == 0 || config.session_hours == 0 {
        return Err(StartupError::Invalid(
            "session_idle_minutes and session_hours must be at least 1".to_owned(),
        ));
    }
    let stopping = CancellationToken::new();
    let state = AppState {
        directory: deps.directory.clone(),
        sessions: session::Sessions::new(
            Duration::from_secs(config.session_idle_minutes.saturating_mul(60)),
            Duration::from_secs(config.session_hours.saturating_mul(3600)),
        ),
        upstream,
        secure: config.secure_cookies,
        oidc: config.oidc_issuer.clone().map(|issuer| Oidc {
            issuer,
            audience: config.oidc_audience.clone(),
            provider: Arc::default(),
        }),
        public_url: config.public_url.clone(),
        stopping: stopping.clone(),
    };
    Service::bind(NAME, config.listen, app(state), vec![], None, stopping).await
}

pub fn app(state: AppState) -> Router {
    let secure = state.secure;
    Router::new()
        .route("/", get(signin::home))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/lang/{lang}", get(signin::language))
        .route("/static/app.css", get(security::stylesheet))
        .route("/static/live.js", get(security::script))
        .merge(pharmacy::routes())
        .merge(clinic::routes())
        .merge(insurer::routes())
        .merge(patient::routes())
        .merge(operator::routes())
        .fallback(layout::not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(
            move |response: axum::response::Response| async move {
                security::headers(response, secure)
            },
        ))
        .with_state(state)
}
