//! `GET /insurer/decisions`: the insurer's latest decisions, for its own staff. Only the
//! insurer this service decides for may read them; every read is audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use hixbus_access::{Action, Caller, Directory};
use hixbus_service::{ApiError, JsonQuery};
use hixbus_storage::AuditLog;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::Store;

/// The API only reads; a request body has no use here.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub insurer: String,
    pub members: usize,
    pub store: Store,
    pub audit: AuditLog,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn decisions(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<Params>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::AdjudicateClaims)?;
    if org.id != state.insurer {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("this service decides for {}, not {}", state.insurer, org.id),
        ));
    }
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let rows = state.store.recent(limit).await.map_err(|e| {
        tracing::error!(error = %e, "decisions unavailable");
        ApiError::unavailable("decisions are unavailable; retry")
    })?;
    state
        .audit
        .record_all(
            &org.id,
            "insurer.decisions",
            rows.iter()
                .map(|(patient_ref, d)| (d.claim_id.as_str(), patient_ref.as_str())),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit write failed; nothing shown");
            ApiError::unavailable("decisions are unavailable; retry")
        })?;
    let mut decisions = Vec::with_capacity(rows.len());
    for (_, d) in rows {
        decisions.push(json!({
            "claim_id": d.claim_id,
            "version": d.claim_version,
            "provider": d.provider_org,
            "outcome": d.outcome.as_str(),
            "paid_jpy": d.paid_amount_jpy,
            "reduced_by_jpy": d.reduced_by_jpy,
            "reasons": d.reasons.iter().map(|r| json!({"code": r.code, "reason": r.display})).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({
        "insurer": state.insurer,
        "members": state.members,
        "decisions": decisions,
    })))
}
