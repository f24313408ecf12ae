//! Builds the insurer feed from its configuration and what it is given.

use axum::Router;
use axum::routing::get;
use hixbus_service::{CancellationToken, Deps, PerKeyLimit, Service, StartupError};
use hixbus_storage::AuditLog;

use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;

use hixbus_access::Role;
use hixbus_bus::Publisher;
use hixbus_bus::topics;

use crate::delivery::{self, Delivery};
use crate::feed::{self, Changes, Feed};
use crate::routes::{self, AppState, STREAMS_PER_INSURER};

/// The service's name (health answers, logs, `hixbus serve insurer-feed`).
pub const NAME: &str = "insurer-feed";
/// The consumer group of every replica.
pub const GROUP: &str = "hixbus-insurer-feed";

/// Migrates its tables, connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    if !(1..=60).contains(&config.evidence_wait_secs) {
        return Err(StartupError::Invalid(
            "evidence_wait_secs is from 1 to 60".to_owned(),
        ));
    }
    let db = deps.database()?;
    create_insurer_topics(&deps).await;
    let feed = Feed::new(db.clone()).await?;
    // Live streams, and the listener feeding them, end when the service begins to stop.
    let stopping = CancellationToken::new();
    let changes = Changes::start(&db, feed.clone(), feed::CHANNEL, stopping.clone()).await?;
    let audit = AuditLog::new(db.clone()).await?;
    let consumer = delivery::consumer(
        &deps.kafka,
        deps.codec.clone(),
        GROUP,
        Delivery {
            changes: changes.clone(),
            directory: deps.directory.clone(),
            publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
            db: db.clone(),
            evidence_wait: Duration::from_secs(config.evidence_wait_secs),
            advanced: Arc::default(),
        },
    )?;
    let state = AppState {
        directory: deps.directory.clone(),
        feed,
        changes,
        audit,
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

/// Creates each insurer's own topic where it is missing. A cluster whose operators create
/// topics themselves refuses; that is logged, not fatal (docs/claims.md lists the topics).
async fn create_insurer_topics(deps: &Deps) {
    let insurers: Vec<&str> = deps
        .directory
        .organizations()
        .filter(|o| o.role == Role::Insurer)
        .map(|o| o.id.as_str())
        .collect();
    let result = match topics::insurer_specs(topics::EMBEDDED, insurers) {
        Ok(specs) => topics::create(&deps.kafka, &specs).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "insurer topics not created; create them as docs/claims.md says");
    }
}

pub fn app(state: AppState) -> Router {
    let (directory, audit) = (state.directory.clone(), state.audit.clone());
    hixbus_service::api(
        Router::new()
            .route("/insurer/feed", get(routes::page))
            .route("/insurer/feed/stream", get(routes::stream)),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
