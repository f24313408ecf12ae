//! Builds the insurer feed from its configuration and what it is given.

use axum::Router;
use axum::middleware;
use axum::routing::get;
use hixbus_service::{
    CancellationToken, DenialAudit, Deps, PerKeyLimit, Service, StartupError, audit_denials,
};
use hixbus_storage::AuditLog;

use crate::config::Config;
use crate::feed::{self, Changes, Feed, Projector};
use crate::routes::{self, AppState, STREAMS_PER_INSURER};

/// The service's name (health answers, logs, `hixbus serve insurer-feed`).
pub const NAME: &str = "insurer-feed";
/// The consumer group of every replica.
pub const GROUP: &str = "hixbus-insurer-feed";

/// Migrates its tables, connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let db = deps.database()?;
    let feed = Feed::new(db.clone()).await?;
    // Live streams, and the listener feeding them, end when the service begins to stop.
    let stopping = CancellationToken::new();
    let changes = Changes::start(&db, feed.clone(), feed::CHANNEL, stopping.clone()).await?;
    let consumer = feed::consumer(
        &deps.kafka,
        deps.codec.clone(),
        GROUP,
        Projector {
            feed: feed.clone(),
            changes: changes.clone(),
            directory: deps.directory.clone(),
        },
    )?;
    let state = AppState {
        directory: deps.directory.clone(),
        feed,
        changes,
        audit: AuditLog::new(db.clone()).await?,
        streams: PerKeyLimit::new(STREAMS_PER_INSURER),
    };
    Service::bind(
        NAME,
        config.listen,
        app(state),
        vec![consumer],
        Some(db),
        stopping,
    )
    .await
}

pub fn app(state: AppState) -> Router {
    let denials = DenialAudit {
        directory: state.directory.clone(),
        audit: state.audit.clone(),
    };
    Router::new()
        .route("/insurer/feed", get(routes::page))
        .route("/insurer/feed/stream", get(routes::stream))
        .fallback(hixbus_service::no_such_route)
        .method_not_allowed_fallback(hixbus_service::method_not_allowed)
        .layer(middleware::from_fn_with_state(denials, audit_denials))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
