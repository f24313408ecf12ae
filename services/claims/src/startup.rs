//! Builds the claims service from its configuration and what it is given.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hixbus_bus::Publisher;
use hixbus_service::{CancellationToken, Deps, PerKeyLimit, Service, StartupError};
use hixbus_storage::AuditLog;

use crate::config::Config;
use crate::projector::{self, Changes, Projector};
use crate::routes::{self, AppState, STREAMS_PER_PROVIDER};
use crate::store::Store;
use crate::tariff::Tariff;

/// The service's name (health answers, logs, `hixbus serve claims`).
pub const NAME: &str = "claims";
/// The consumer group of every replica.
pub const GROUP: &str = "hixbus-claims";

/// Loads the tables, migrates its tables, connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let tariff = match &config.tariffs {
        Some(dir) => Tariff::load(dir),
        None => Tariff::embedded(),
    }
    .map_err(|e| StartupError::Invalid(e.to_string()))?;
    tracing::info!(
        drugs = tariff.len(),
        tables = %tariff.label(),
        "price and fee tables loaded"
    );
    let db = deps.database()?;
    let store = Store::new(db.clone()).await?;
    let publisher = Publisher::new(&deps.kafka, deps.codec.clone())?;
    // Live streams, and the listener feeding them, end when the service begins to stop.
    let stopping = CancellationToken::new();
    let changes = Changes::start(&db, store.clone(), projector::CHANNEL, stopping.clone()).await?;
    let consumer = projector::consumer(
        &deps.kafka,
        deps.codec.clone(),
        GROUP,
        Projector {
            store: store.clone(),
            publisher: publisher.clone(),
            tariff: Arc::new(tariff),
            changes: changes.clone(),
        },
    )?;
    let state = AppState {
        directory: deps.directory.clone(),
        store,
        publisher,
        audit: AuditLog::new(db.clone()).await?,
        changes,
        streams: PerKeyLimit::new(STREAMS_PER_PROVIDER),
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
    let (directory, audit) = (state.directory.clone(), state.audit.clone());
    hixbus_service::api(
        Router::new()
            .route("/fhir/Claim", post(routes::submit))
            .route("/claims", get(routes::list))
            .route("/claims/stream", get(routes::stream))
            .route("/claims/{claim_id}", get(routes::one)),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
