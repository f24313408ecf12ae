//! Builds the gateway; tests run the real thing on port 0.

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
use hixbus_bus::{KafkaConfig, Publisher};
use hixbus_service::{DenialAudit, audit_denials};
use hixbus_storage::{AuditLog, Database};

use crate::routes::{self, AppState};
use crate::store::Submissions;
use crate::view::{self, ClinicView};

/// The consumer group of every gateway replica (it feeds the clinic view).
pub const GROUP: &str = "hixbus-clinic-gateway";

/// The clinic gateway, bound and ready to run.
pub type Gateway = HttpService;

/// Connects the service to its database and the bus and binds `listen`.
pub async fn build(
    listen: SocketAddr,
    directory: Arc<Directory>,
    kafka: &KafkaConfig,
    publisher: Publisher,
    db: Database,
    codes: CodeKeys,
) -> Result<Gateway, StartupError> {
    let submissions = Submissions::new(db.clone()).await?;
    let view = ClinicView::new(db.clone()).await?;
    let audit = AuditLog::new(db).await?;
    let consumer = view::consumer(kafka, publisher.codec().clone(), GROUP, &view)?;
    let state = AppState {
        directory,
        publisher,
        submissions,
        view,
        audit,
        codes: Arc::new(codes),
    };
    HttpService::bind(listen, app(state), consumer).await
}

pub fn app(state: AppState) -> Router {
    let denials = DenialAudit {
        directory: state.directory.clone(),
        audit: state.audit.clone(),
    };
    Router::new()
        .route("/fhir/Bundle", post(routes::post_bundle))
        .route(
            "/fhir/MedicationRequest",
            post(routes::post_medication_request),
        )
        .route("/clinic/prescriptions", get(routes::list_issued))
        .route("/clinic/prescriptions/{id}", get(routes::get_issued))
        .route("/clinic/prescriptions/{id}/cancel", post(routes::cancel))
        .route("/health", get(routes::health))
        .fallback(hixbus_service::no_such_route)
        .method_not_allowed_fallback(hixbus_service::method_not_allowed)
        .layer(middleware::from_fn_with_state(denials, audit_denials))
        .layer(DefaultBodyLimit::max(routes::MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
