//! Builds the operator service from its configuration and what it is given.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hixbus_bus::Publisher;
use hixbus_bus::topics;
use hixbus_contracts::Catalog;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};
use hixbus_storage::AuditLog;

use crate::config::Config;
use crate::redrives::Redrives;
use crate::routes::{self, AppState};
use crate::watch::{Targets, Watch};

/// The service's name (health answers, logs, `hixbus serve ops`).
pub const NAME: &str = "ops";

/// Migrates its tables, starts watching the exchange and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    if !(1..=300).contains(&config.sample_secs) {
        return Err(StartupError::Invalid(
            "sample_secs is from 1 to 300".to_owned(),
        ));
    }
    let health_checks = config.health_checks().map_err(StartupError::Invalid)?;
    let db = deps.database()?;
    let exchange: Vec<String> = topics::specs(topics::EMBEDDED, Catalog::embedded())
        .map_err(|e| StartupError::Invalid(format!("the embedded topics file: {e}")))?
        .into_iter()
        .map(|spec| spec.name)
        // Dead-letter topics are counted with the topic they hold the letters of.
        .filter(|name| !name.ends_with(hixbus_bus::dlq::SUFFIX))
        .collect();
    let stopping = CancellationToken::new();
    let watch = Watch::start(
        Targets {
            kafka: deps.kafka.clone(),
            codec: deps.codec.clone(),
            topics: exchange.clone(),
            groups: config.groups(),
            health_checks,
            every: Duration::from_secs(config.sample_secs),
        },
        stopping.clone(),
    );
    let state = AppState {
        directory: deps.directory.clone(),
        audit: AuditLog::new(db.clone()).await?,
        watch,
        kafka: deps.kafka.clone(),
        codec: deps.codec.clone(),
        publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
        redrives: Redrives::new(db.clone()).await?,
        topics: Arc::new(exchange),
    };
    Service::bind(NAME, config.listen, app(state), vec![], Some(db), stopping).await
}

pub fn app(state: AppState) -> Router {
    let (directory, audit) = (state.directory.clone(), state.audit.clone());
    hixbus_service::api(
        Router::new()
            .route("/ops/overview", get(routes::overview))
            .route("/ops/dead-letters", get(routes::letters))
            .route(
                "/ops/dead-letters/{topic}/{partition}/{offset}",
                get(routes::letter),
            )
            .route(
                "/ops/dead-letters/{topic}/{partition}/{offset}/redrive",
                post(routes::redrive),
            ),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
