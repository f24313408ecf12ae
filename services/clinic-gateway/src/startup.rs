//! Builds the gateway from its configuration and what it is given; tests run the real thing on
//! port 0.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use hixbus_bus::Publisher;
use hixbus_service::config::code_keys;
use hixbus_service::{CancellationToken, Deps, PerKeyLimit, Service, StartupError};
use hixbus_storage::{AuditLog, Links};

use crate::config::Config;
use crate::results::{self, Results};
use crate::results_api::{self, Inbox};
use crate::routes::{self, AppState};
use crate::store::Submissions;
use crate::view::{self, ClinicView};

/// The service's name (health answers, logs, `hixbus serve clinic-gateway`).
pub const NAME: &str = "clinic-gateway";
/// The consumer group of every gateway replica (it feeds the clinic view).
pub const GROUP: &str = "hixbus-clinic-gateway";
/// The consumer group feeding the results inbox.
pub const RESULTS_GROUP: &str = "hixbus-clinic-gateway-results";

/// Migrates its tables, connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let db = deps.database()?;
    let codes = code_keys(
        config.access_code_key.as_ref(),
        &config.access_code_previous_keys,
    )?;
    let submissions = Submissions::new(db.clone()).await?;
    let view = ClinicView::new(db.clone()).await?;
    let audit = AuditLog::new(db.clone()).await?;
    let consumer = view::consumer(&deps.kafka, deps.codec.clone(), GROUP, &view)?;
    // Live result streams, and the listener feeding them, end when the service begins to stop:
    // the graceful shutdown waits for every open response.
    let stopping = CancellationToken::new();
    let results = Results::new(db.clone()).await?;
    let changes =
        results::Changes::start(&db, results.clone(), results::CHANNEL, stopping.clone()).await?;
    let results_consumer = results::consumer(
        &deps.kafka,
        deps.codec.clone(),
        RESULTS_GROUP,
        results::Projector {
            results: results.clone(),
            changes: changes.clone(),
        },
    )?;
    let state = AppState {
        directory: deps.directory.clone(),
        publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
        submissions,
        view,
        audit,
        codes: Arc::new(codes),
        links: Links::new(db.clone()).await?,
        inbox: Inbox {
            results,
            changes,
            streams: PerKeyLimit::new(results_api::STREAMS_PER_CLINIC),
        },
    };
    Service::bind(
        NAME,
        config.listen,
        app(state),
        vec![consumer, results_consumer],
        Some(db),
        stopping,
    )
    .await
}

pub fn app(state: AppState) -> Router {
    let (directory, audit) = (state.directory.clone(), state.audit.clone());
    hixbus_service::api(
        Router::new()
            .route("/fhir/Bundle", post(routes::post_bundle))
            .route(
                "/fhir/MedicationRequest",
                post(routes::post_medication_request),
            )
            .route("/clinic/prescriptions", get(routes::list_issued))
            .route("/clinic/prescriptions/{id}", get(routes::get_issued))
            .route("/clinic/prescriptions/{id}/cancel", post(routes::cancel))
            .route("/clinic/results", get(results_api::list))
            .route("/clinic/results/stream", get(results_api::stream))
            .route("/clinic/results/{lab}/{report_id}", get(results_api::get))
            .route(
                "/clinic/results/{lab}/{report_id}/acknowledge",
                post(results_api::acknowledge),
            ),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
