//! The providers' claims API: `POST /fhir/Claim` (a FHIR R4 Claim, answered with an
//! `OperationOutcome` on errors; idempotent on `Claim.identifier`), `GET /claims` (the caller's
//! claims, latest version each, with the insurer's decision), `GET /claims/{claim_id}` (every
//! version with its decision). A provider sees only its own; every read is audited.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller, Directory, Organization, Role};
use hixbus_bus::Publisher;
use hixbus_contracts::{ClaimSubmitted, Coverage, Envelope, lifecycle};
use hixbus_service::changes::Shown;
use hixbus_service::fhir::{self, FhirError, Outcome};
use hixbus_service::{
    ApiError, JsonPath, JsonQuery, PerKeyLimit, ReadModelError, body, institution,
};
use hixbus_storage::AuditLog;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fhir_claim;
use crate::projector::{Changes, claim_event_id};
use crate::shares;
use crate::store::{ClaimRow, NewClaim, Store, change_key};

/// A FHIR Claim of 500 items is well under this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// The most versions one claim may have: a claim returned this often needs a phone call.
pub const MAX_VERSIONS: i32 = 20;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub store: Store,
    pub publisher: Publisher,
    pub audit: AuditLog,
    pub changes: Changes,
    pub streams: Arc<PerKeyLimit>,
}

/// Live streams one provider may hold open.
pub const STREAMS_PER_PROVIDER: usize = 16;

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Outcome {
    tracing::error!(error = %e, "claims store failed");
    Outcome::one(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        "$",
        "the claims service is unavailable; send the same Claim again",
    )
}

/// What a provider sees of one claim version.
pub fn view(row: &ClaimRow) -> Value {
    let decision = row.decision.as_ref().map(|d| {
        json!({
            "outcome": d.outcome.as_str(),
            "paid_jpy": d.paid_amount_jpy,
            "reduced_by_jpy": d.reduced_by_jpy,
            "reasons": d.reasons.iter().map(|r| json!({
                "code": r.code,
                "reason": r.display,
            })).collect::<Vec<_>>(),
            "line_adjustments": d.line_adjustments,
            "event_id": d.envelope.event_id,
        })
    });
    let status = match (&row.decision, row.status.as_str()) {
        (Some(d), _) => d.outcome.as_str(),
        (None, "submitted" | "pending") => "awaiting decision",
        (None, other) => other,
    };
    json!({
        "claim_id": row.claim_id,
        "version": row.version,
        "status": status,
        "event_id": row.event_id,
        "insurer": row.insurer_org,
        "patient_ref": row.patient_ref,
        "submitted_at": row.submitted_at,
        "problem": row.problem,
        "claim": row.event.as_ref().map(|c| json!({
            "type": c.claim_type,
            "prescription_id": c.prescription_id,
            "service_start": c.service_start.to_string(),
            "service_end": c.service_end.to_string(),
            "lines": c.lines,
            "total_jpy": c.total_amount_jpy,
            "patient_jpy": c.patient_copay_jpy,
            "public_expense_jpy": c.public_expense_jpy,
            "insurer_jpy": c.insurer_share_jpy,
            "tariff": c.tariff,
        })),
        "decision": decision,
    })
}

/// `POST /fhir/Claim`.
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    let org = caller.require(Action::SubmitClaims)?;
    fhir::require_media_type(&headers)?;
    let bytes = body::read(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| Outcome::one(e.status(), "too-costly", "$", e.to_string()))?;
    let json = fhir::parse(&bytes)?;
    let claim = fhir_claim::read(&json, lifecycle::today_in_japan()).map_err(Outcome::invalid)?;
    let Some(insurer) = state
        .directory
        .with_institution_code(&claim.coverage.insurer_number)
        .find(|o| o.role == Role::Insurer)
        .map(|o| o.id.clone())
    else {
        return Err(Outcome::one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value",
            "Claim.insurance",
            format!(
                "insurer {} is not on the exchange; bill it the way it accepts claims",
                claim.coverage.insurer_number
            ),
        )
        .into());
    };
    let digest = hex::encode(Sha256::digest(json.to_string().as_bytes()));
    let versions = state
        .store
        .versions(&org.id, &claim.claim_id)
        .await
        .map_err(unavailable)?;
    // The same Claim again (its answer was lost): the same answer, and a publication cut short
    // finished.
    if let Some(same) = versions.iter().find(|v| v.digest == digest) {
        if same.status == "pending"
            && let Some(event) = &same.event
        {
            crate::projector::publish(&state.publisher, &state.store, event)
                .await
                .map_err(unavailable)?;
            state
                .changes
                .announce(&change_key(&org.id, &same.claim_id, same.version))
                .await;
        }
        return Ok(accepted(StatusCode::OK, same, true));
    }
    let previous = versions.last();
    if let Some(previous) = previous {
        // A returned claim is corrected; a dispensing the tables could not price is billed by
        // hand.
        let correctable = previous.status == "unpriced"
            || previous
                .decision
                .as_ref()
                .is_some_and(|d| d.outcome == hixbus_contracts::ClaimOutcome::Returned);
        if !correctable {
            let state_now = previous
                .decision
                .as_ref()
                .map_or("awaiting a decision", |d| d.outcome.as_str());
            return Err(Outcome::one(
                StatusCode::CONFLICT,
                "conflict",
                "Claim.identifier",
                format!(
                    "claim {} version {} is {state_now}; only a returned claim is corrected and sent again",
                    claim.claim_id, previous.version
                ),
            )
            .into());
        }
        if previous.version >= MAX_VERSIONS {
            return Err(Outcome::one(
                StatusCode::CONFLICT,
                "conflict",
                "Claim.identifier",
                format!(
                    "claim {} has {MAX_VERSIONS} versions already",
                    claim.claim_id
                ),
            )
            .into());
        }
    }
    let version = previous.map_or(1, |p| p.version + 1);
    let event_id = claim_event_id(&org.id, &claim.claim_id, version);
    let event = claim_submitted(org, &insurer, claim, version, previous, &event_id);
    let recorded = state
        .store
        .insert(&NewClaim {
            provider_org: &org.id,
            claim_id: &event.claim_id,
            version,
            event_id: &event_id,
            digest: &digest,
            status: "pending",
            patient_ref: &event.envelope.patient_ref,
            insurer_org: Some(&insurer),
            event: Some(&event),
            problem: None,
        })
        .await
        .map_err(unavailable)?;
    if !recorded {
        return Err(Outcome::one(
            StatusCode::CONFLICT,
            "conflict",
            "Claim.identifier",
            "another version of this claim was sent at the same moment; read it and retry",
        )
        .into());
    }
    if let Err(e) = state.publisher.publish(&event).await {
        state
            .store
            .forget_pending(&event_id)
            .await
            .map_err(unavailable)?;
        return Err(unavailable(e).into());
    }
    state
        .store
        .set_status(&event_id, "submitted")
        .await
        .map_err(unavailable)?;
    // Published already, so a failed audit write cannot undo it: it is logged for the operator.
    if let Err(e) = state
        .audit
        .record(
            &org.id,
            "claims.submit",
            &event.claim_id,
            &event.envelope.patient_ref,
        )
        .await
    {
        tracing::error!(error = %e, claim_id = %event.claim_id, "audit of a submitted claim failed");
    }
    state
        .changes
        .announce(&change_key(&org.id, &event.claim_id, version))
        .await;
    let rows = state
        .store
        .versions(&org.id, &event.claim_id)
        .await
        .map_err(unavailable)?;
    let row = rows
        .iter()
        .find(|r| r.version == version)
        .ok_or_else(|| unavailable("the claim just recorded is missing"))?;
    Ok(accepted(StatusCode::CREATED, row, false))
}

fn accepted(status: StatusCode, row: &ClaimRow, replayed: bool) -> Response {
    let mut body = view(row);
    body["replayed"] = json!(replayed);
    (status, Json(body)).into_response()
}

fn claim_submitted(
    org: &Organization,
    insurer: &str,
    claim: fhir_claim::FhirClaim,
    version: i32,
    previous: Option<&ClaimRow>,
    event_id: &str,
) -> ClaimSubmitted {
    let split = shares::split(claim.total_jpy, &claim.coverage, claim.service_end);
    let prescription_id = claim.prescription_id.clone();
    ClaimSubmitted {
        envelope: Envelope {
            event_id: event_id.to_owned(),
            correlation_id: Some(claim.claim_id.clone()),
            causation_id: previous.map(|p| p.event_id.clone()),
            ..Envelope::new(&org.id, &claim.patient_ref)
        },
        insurer_org: insurer.to_owned(),
        member_id: claim.coverage.member_id(),
        provider: institution(org),
        service_start: claim.service_start,
        service_end: claim.service_end,
        diagnoses: claim.diagnoses,
        lines: claim.lines,
        total_amount_jpy: claim.total_jpy,
        patient_copay_jpy: split.patient_jpy,
        claim_type: claim.claim_type,
        version,
        replaces_event_id: previous.map(|p| p.event_id.clone()),
        prescription_id,
        prescription_issuer_org: None,
        coverage: Some(Coverage {
            insurer_org: Some(insurer.to_owned()),
            ..claim.coverage
        }),
        insurer_share_jpy: split.insurer_jpy,
        public_expense_jpy: split.public_expense_jpy,
        tariff: None,
        claim_id: claim.claim_id,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    before: Option<String>,
}

fn failed(e: ReadModelError) -> ApiError {
    tracing::error!(error = %e, "claims store failed");
    ApiError::unavailable("the claims service is unavailable; retry")
}

async fn audit(state: &AppState, org: &Organization, rows: &[ClaimRow]) -> Result<(), ApiError> {
    state
        .audit
        .record_all(
            &org.id,
            "claims.read",
            rows.iter()
                .map(|r| (r.claim_id.as_str(), r.patient_ref.as_str())),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audit write failed; nothing shown");
            ApiError::unavailable("the claims service is unavailable; retry")
        })
}

/// `GET /claims`: the caller's claims, newest first, a page at a time.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::SubmitClaims)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let before = params
        .before
        .as_deref()
        .map(|b| {
            b.split_once('|')
                .ok_or_else(|| ApiError::bad_request("before is the next of a previous page"))
        })
        .transpose()?;
    let rows = state
        .store
        .page(&org.id, before, limit)
        .await
        .map_err(failed)?;
    audit(&state, org, &rows).await?;
    let claims: Vec<Value> = rows.iter().map(view).collect();
    let next = (rows.len() == limit as usize)
        .then(|| {
            rows.last()
                .map(|r| format!("{}|{}", r.submitted_at, r.claim_id))
        })
        .flatten();
    Ok(Json(json!({ "claims": claims, "next": next })))
}

/// `GET /claims/{claim_id}`: every version, oldest first.
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(claim_id): JsonPath<String>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::SubmitClaims)?;
    if claim_id.chars().count() > fhir_claim::MAX_IDENTIFIER_CHARS {
        return Err(ApiError::bad_request("no such claim id"));
    }
    let rows = state
        .store
        .versions(&org.id, &claim_id)
        .await
        .map_err(failed)?;
    if rows.is_empty() {
        let shown: String = claim_id.chars().take(64).collect();
        return Err(ApiError::not_found(format!("you have no claim {shown}")));
    }
    audit(&state, org, &rows).await?;
    let versions: Vec<Value> = rows.iter().map(view).collect();
    Ok(Json(json!({ "claim_id": claim_id, "versions": versions })))
}

/// `GET /claims/stream`: the caller's claims, live — one `claim` event (the version as
/// [`view`] shows it) whenever one is submitted, priced or decided. Every delivery is audited.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    let org = caller.require(Action::SubmitClaims)?.clone();
    let Some(permit) = state.streams.try_acquire(&org.id) else {
        return Err(ApiError::too_many(
            "too_many_streams",
            format!(
                "at most {STREAMS_PER_PROVIDER} live streams at once per provider; close one first"
            ),
            std::time::Duration::from_secs(5),
        ));
    };
    Ok(state.changes.screen(
        state.audit.clone(),
        org,
        "claims.stream",
        permit,
        |org, row: &ClaimRow| {
            (row.provider_org == org.id).then(|| Shown {
                event: "claim",
                data: view(row).to_string(),
                subject_id: row.claim_id.clone(),
                patient_ref: row.patient_ref.clone(),
            })
        },
    ))
}
