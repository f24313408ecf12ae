//! Builds the pharmacy service: its HTTP API and the consumer that feeds its read model.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use hixbus_access::Directory;
use hixbus_access::codes::CodeKeys;
use hixbus_bus::http::HttpService;
pub use hixbus_bus::http::StartupError;
use hixbus_bus::shutdown;
use hixbus_bus::{KafkaConfig, Publisher};
use hixbus_service::{DenialAudit, PerKeyLimit, audit_denials};
use hixbus_storage::{AuditLog, Database};

use crate::changes::Changes;
use crate::projector;
use crate::routes::{self, AppState};
use crate::store::Store;

/// The consumer group of every pharmacy-service replica.
pub const GROUP: &str = "hixbus-pharmacy";

/// The pharmacy service, bound and ready to run.
pub type PharmacyService = HttpService;

/// Connects the service to its database and the bus and binds `listen`.
pub async fn build(
    listen: SocketAddr,
    directory: Arc<Directory>,
    kafka: &KafkaConfig,
    publisher: Publisher,
    db: Database,
    codes: CodeKeys,
) -> Result<PharmacyService, StartupError> {
    let store = Store::new(db.clone(), Arc::new(codes)).await?;
    let audit = AuditLog::new(db.clone()).await?;
    // Live inbox streams, and the listener feeding them, end when the service stops (see
    // `HttpService::closing`).
    let (closing, streams_end) = shutdown::signal();
    let changes = Changes::start(&db, &store, streams_end).await?;
    let consumer = projector::consumer(
        kafka,
        publisher.codec().clone(),
        GROUP,
        store.clone(),
        changes.clone(),
    )?;
    let state = AppState {
        directory,
        publisher,
        store,
        audit,
        changes,
        claims: Arc::default(),
        inbox_reads: PerKeyLimit::new(routes::INBOX_READS_PER_PHARMACY),
        streams: PerKeyLimit::new(routes::STREAMS_PER_PHARMACY),
    };
    let service = HttpService::bind(listen, app(state), consumer).await?;
    Ok(service.closing(closing))
}

pub fn app(state: AppState) -> Router {
    let denials = DenialAudit {
        directory: state.directory.clone(),
        audit: state.audit.clone(),
    };
    Router::new()
        .route("/pharmacy/inbox", get(routes::inbox))
        .route("/pharmacy/inbox/stream", get(routes::stream))
        .route("/pharmacy/claims", post(routes::claim))
        .route("/pharmacy/prescriptions/{id}", get(routes::prescription))
        .route(
            "/pharmacy/prescriptions/{id}/dispense",
            post(routes::dispense),
        )
        .route("/health", get(routes::health))
        .fallback(hixbus_service::no_such_route)
        .method_not_allowed_fallback(hixbus_service::method_not_allowed)
        .layer(middleware::from_fn_with_state(denials, audit_denials))
        .layer(DefaultBodyLimit::max(routes::MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
