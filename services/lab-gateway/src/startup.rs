//! Builds the lab gateway from its configuration and what it is given.

use axum::Router;
use axum::routing::{post, put};
use hixbus_bus::{Consumer, HandlerError, Publisher};
use hixbus_contracts::PatientLinked;
use hixbus_service::identity::keep_link;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};
use hixbus_storage::AuditLog;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::mllp;
use crate::routes::{self, AppState};
use hixbus_storage::Links;

/// The service's name (health answers, logs, `hixbus serve lab-gateway`).
pub const NAME: &str = "lab-gateway";
/// The consumer group of every replica (it keeps the patient links others published).
pub const GROUP: &str = "hixbus-lab-gateway";

/// Migrates its tables (the audit log), connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let db = deps.database()?;
    let senders = mllp::senders(&config.mllp_senders).map_err(StartupError::Invalid)?;
    let state = AppState {
        directory: deps.directory.clone(),
        publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
        audit: AuditLog::new(db.clone()).await?,
        links: Links::new(db.clone()).await?,
    };
    // Links made elsewhere (from prescriptions, by another replica) resolve local ids here too.
    let links = Consumer::builder(&deps.kafka, deps.codec.clone(), GROUP)
        .with_state(state.links.clone())
        .on(|links: Links, e: PatientLinked, _| async move {
            keep_link(&links, &e).await.map_err(HandlerError::transient)
        })?
        .build()?;
    let stopping = CancellationToken::new();
    let mllp = match config.mllp_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Listen { addr, source })?,
        ),
        None => None,
    };
    let service = Service::bind(
        NAME,
        config.listen,
        app(state.clone()),
        vec![links],
        Some(db),
        stopping.clone(),
    )
    .await?;
    Ok(match mllp {
        Some(listener) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, senders = senders.len(), "MLLP listening");
            }
            let frame = std::time::Duration::from_secs(config.mllp_frame_timeout_secs.max(1));
            service.with_server(mllp::serve(listener, state, senders, frame, stopping))
        }
        None => service,
    })
}

pub fn app(state: AppState) -> Router {
    let (directory, audit) = (state.directory.clone(), state.audit.clone());
    hixbus_service::api(
        Router::new()
            .route("/hl7v2", post(routes::post_hl7v2))
            .route("/fhir/Observation", post(routes::post_observation))
            .route(
                "/fhir/DiagnosticReport",
                post(routes::post_diagnostic_report),
            )
            .route("/fhir/Bundle", post(routes::post_bundle))
            .route("/fhir/Patient/{id}", put(routes::put_patient)),
        directory,
        audit,
        routes::MAX_FHIR_BYTES,
    )
    .with_state(state)
}
