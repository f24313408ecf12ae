//! Builds the reference insurer from its configuration and what it is given.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use hixbus_access::Role;
use hixbus_bus::Publisher;
use hixbus_claims::tariff::Tariff;
use hixbus_service::{CancellationToken, Deps, Service, StartupError};
use hixbus_storage::AuditLog;

use crate::adjudicator::{self, Adjudicator};
use crate::config::Config;
use crate::roster::Roster;
use crate::routes::{self, AppState};
use crate::store::Store;

/// The service's name (health answers, logs, `hixbus serve insurer`).
pub const NAME: &str = "insurer";

pub async fn build(config: Config, deps: Deps) -> Result<Service, StartupError> {
    let insurer = config.insurer.clone().ok_or_else(|| {
        StartupError::Invalid(
            "insurer: name the insurer this service decides for (HIXBUS_INSURER)".to_owned(),
        )
    })?;
    let org = deps
        .directory
        .get(&insurer)
        .filter(|o| o.role == Role::Insurer)
        .ok_or_else(|| {
            StartupError::Invalid(format!(
                "{insurer} is not an insurer in the organizations file"
            ))
        })?;
    let insurer_number = org.institution_code.clone().ok_or_else(|| {
        StartupError::Invalid(format!(
            "{insurer} has no institution_code: its insurer number (保険者番号) names its members"
        ))
    })?;
    let roster = match &config.roster {
        Some(path) => Roster::load(path).map_err(|e| StartupError::Invalid(e.to_string()))?,
        None => {
            tracing::warn!(%insurer, "no roster: every claim will be returned as not a member");
            Roster::default()
        }
    };
    let tariff = match &config.tariffs {
        Some(dir) => Tariff::load(dir),
        None => Tariff::embedded(),
    }
    .map_err(|e| StartupError::Invalid(e.to_string()))?;
    tracing::info!(%insurer, members = roster.len(), tables = %tariff.label(), "insurer ready");
    let db = deps.database()?;
    let store = Store::new(db.clone()).await?;
    let members = roster.len();
    let consumer = adjudicator::consumer(
        &deps.kafka,
        deps.codec.clone(),
        Adjudicator {
            insurer: insurer.clone(),
            insurer_number,
            roster: Arc::new(roster),
            tariff: Arc::new(tariff),
            directory: deps.directory.clone(),
            store: store.clone(),
            publisher: Publisher::new(&deps.kafka, deps.codec.clone())?,
        },
    )?;
    let state = AppState {
        directory: deps.directory.clone(),
        insurer,
        members,
        store,
        audit: AuditLog::new(db.clone()).await?,
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
        Router::new().route("/insurer/decisions", get(routes::decisions)),
        directory,
        audit,
        routes::MAX_BODY_BYTES,
    )
    .with_state(state)
}
