//! Builds the patient record service from its configuration and what it is given.

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};
use hixbus_bus::Publisher;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};
use hixbus_storage::AuditLog;

use crate::config::Config;
use crate::projector::{self, Projector};
use crate::routes::{self, AppState};
use crate::signin::{SignIn, Verifier};
use crate::store::Store;
use crate::{consents, delegation, summary};

/// The service's name (health answers, logs, `hixbus serve patient`).
pub const NAME: &str = "patient";
/// The consumer group of every replica (unless `consumer_group` says otherwise).
pub const GROUP: &str = "hixbus-patient";

/// Migrates its tables, connects to the bus and binds `config.listen`.
pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let verifier = match (&config.oidc_issuer, &config.oidc_audience) {
        (Some(issuer), Some(audience)) => Some(Arc::new(Verifier::new(
            issuer.clone(),
            audience.clone(),
            config.oidc_jwks_url.clone(),
        ))),
        (None, None) => {
            tracing::warn!("no oidc_issuer: patients cannot sign in (docs/patients.md)");
            None
        }
        _ => {
            return Err(StartupError::Invalid(
                "set both oidc_issuer and oidc_audience, or neither".into(),
            ));
        }
    };
    let db = deps.database()?;
    let store = Store::new(db.clone()).await?;
    let consumer = projector::consumer(
        &deps.kafka,
        deps.codec.clone(),
        &config.consumer_group,
        Projector {
            store: store.clone(),
        },
    )?;
    let state = AppState {
        directory: deps.directory.clone(),
        signin: SignIn {
            verifier,
            store: store.clone(),
        },
        store,
        audit: AuditLog::new(db.clone()).await?,
        publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
    };
    Service::bind(
        NAME,
        config.listen,
        app(state),
        vec![consumer],
        Some(db),
        CancellationToken::new(),
    )
    .await
}

pub fn app(state: AppState) -> Router {
    let (directory, audit) = (state.directory.clone(), state.audit.clone());
    hixbus_service::api(
        Router::new()
            .route("/patient/enrolment-codes", post(routes::issue_code))
            .route("/patient/enrol", post(routes::enrol))
            .route("/patient/me", get(routes::me))
            .route("/patient/timeline", get(routes::timeline))
            .route("/patient/medications", get(routes::medications))
            .route("/patient/lab-trends", get(routes::lab_trends))
            .route("/patient/checkups", get(routes::checkups))
            .route("/patient/expenses", get(routes::expenses))
            .route("/patient/export", get(routes::export))
            .route(
                "/patient/consents",
                get(consents::list).post(consents::grant),
            )
            .route("/patient/consents/{consent_id}", delete(consents::revoke))
            .route("/patient/research", put(consents::research))
            .route("/patient/access", get(consents::access))
            .route("/patient/access/download", get(consents::download))
            .route(
                "/patient/delegations",
                get(delegation::list).post(delegation::invite),
            )
            .route("/patient/delegations/accept", post(delegation::accept))
            .route("/patient/delegations/{id}", delete(delegation::revoke))
            .route("/patient/acting-for", get(delegation::acting_for))
            .route("/summary/{patient_ref}", get(summary::read))
            .route(
                "/summary/{patient_ref}/break-glass",
                post(summary::break_glass),
            ),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
