//! Builds the pharmacy service from its configuration and what it is given: its HTTP API and
//! the consumer that feeds its read model.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hixbus_bus::Publisher;
use hixbus_service::config::code_keys;
use hixbus_service::{CancellationToken, Deps, PerKeyLimit, Service, StartupError};
use hixbus_storage::AuditLog;

use hixbus_consent::ConsentBook;

use crate::alerts::AlertLens;
use crate::changes::{self, Changes};
use crate::config::Config;
use crate::projector;
use crate::routes::{self, AppState};
use crate::store::Store;

/// The service's name (health answers, logs, `hixbus serve pharmacy`).
pub const NAME: &str = "pharmacy";
/// The consumer group of every pharmacy-service replica.
pub const GROUP: &str = "hixbus-pharmacy";

/// Migrates its tables, connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let db = deps.database()?;
    let codes = code_keys(
        config.access_code_key.as_ref(),
        &config.access_code_previous_keys,
    )?;
    let store = Store::new(db.clone(), Arc::new(codes)).await?;
    let audit = AuditLog::new(db.clone()).await?;
    let consents = ConsentBook::new(db.clone()).await?;
    // Live inbox streams, and the listener feeding them, end when the service begins to stop:
    // the graceful shutdown waits for every open response.
    let stopping = CancellationToken::new();
    let changes = Changes::start(&db, store.clone(), changes::CHANNEL, stopping.clone()).await?;
    let consumer = projector::consumer(
        &deps.kafka,
        deps.codec.clone(),
        GROUP,
        projector::Projector {
            store: store.clone(),
            changes: changes.clone(),
            consents: consents.clone(),
        },
    )?;
    let publisher = Publisher::new(&deps.kafka, deps.codec.clone())?;
    tokio::spawn(routes::resume_dispensings(
        store.clone(),
        publisher.clone(),
        changes.clone(),
    ));
    let state = AppState {
        directory: deps.directory.clone(),
        publisher,
        alerts: AlertLens {
            store: store.clone(),
            consents,
            audit: audit.clone(),
        },
        store,
        audit,
        changes,
        claims: Arc::default(),
        inbox_reads: PerKeyLimit::new(routes::INBOX_READS_PER_PHARMACY),
        streams: PerKeyLimit::new(routes::STREAMS_PER_PHARMACY),
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
            .route("/pharmacy/inbox", get(routes::inbox))
            .route("/pharmacy/inbox/stream", get(routes::stream))
            .route("/pharmacy/claims", post(routes::claim))
            .route("/pharmacy/prescriptions/{id}", get(routes::prescription))
            .route(
                "/pharmacy/prescriptions/{id}/dispense",
                post(routes::dispense),
            ),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
