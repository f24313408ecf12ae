//! The gateway's HTTP API (FHIR in, JSON out).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller, Directory, Organization, Role};
use hixbus_bus::Publisher;
use hixbus_contracts::{
    Envelope, InstitutionRef, PractitionerRef, PrescriptionCancelled, PrescriptionIssued, Timestamp,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fhir::{self, Submission};
use crate::outcome::{Issue, operation_outcome};
use crate::store::{SubmissionRow, Submissions};
use crate::view::{ClinicView, ViewError};
use hixbus_storage::AuditLog;

/// A prescription is valid for four days including the day of issue (Japanese rule).
const VALID_DAYS_AFTER_ISSUE: i32 = 3;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub publisher: Publisher,
    pub submissions: Submissions,
    pub view: ClinicView,
    pub audit: AuditLog,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

/// A FHIR error answer.
#[derive(Debug)]
pub struct Rejected {
    status: StatusCode,
    issues: Vec<Issue>,
}

impl Rejected {
    fn new(status: StatusCode, issues: Vec<Issue>) -> Self {
        Self { status, issues }
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            Json(operation_outcome(&self.issues)).0.to_string(),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct IssueParams {
    /// The pharmacy the patient chose; absent for an open prescription that any pharmacy can
    /// claim with the access code.
    target_pharmacy: Option<String>,
}

/// How a resource type becomes a submission.
type Reader = fn(&Value, &str) -> Result<Submission, Vec<Issue>>;

pub async fn post_bundle(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<IssueParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    submit(&state, &caller, params, &headers, &body, fhir::read_bundle).await
}

pub async fn post_medication_request(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<IssueParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    submit(
        &state,
        &caller,
        params,
        &headers,
        &body,
        fhir::read_medication_request,
    )
    .await
}

async fn submit(
    state: &AppState,
    caller: &Caller,
    params: IssueParams,
    headers: &HeaderMap,
    body: &[u8],
    read: Reader,
) -> Result<Response, Response> {
    let org = caller
        .require(Action::IssuePrescription)
        .map_err(IntoResponse::into_response)?;
    let json = parse_fhir_json(headers, body).map_err(IntoResponse::into_response)?;
    let submission = read(&json, &org.id).map_err(|issues| invalid(issues).into_response())?;
    issue(state, org, submission, params).await
}

/// 400 when the request is not the right kind of thing at all, 422 when it is but its content
/// is incomplete or wrong.
fn invalid(issues: Vec<Issue>) -> Rejected {
    let status = if issues.iter().any(|i| i.code == "structure") {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Rejected::new(status, issues)
}

fn parse_fhir_json(headers: &HeaderMap, body: &[u8]) -> Result<Value, Rejected> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(media, "application/fhir+json" | "application/json") {
        return Err(Rejected::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            vec![Issue::new(
                "not-supported",
                "Content-Type",
                format!("send application/fhir+json, not {content_type:?}"),
            )],
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Rejected::new(
            StatusCode::BAD_REQUEST,
            vec![Issue::new(
                "structure",
                "$",
                format!("the body is not valid JSON: {e}"),
            )],
        )
    })
}

async fn issue(
    state: &AppState,
    org: &Organization,
    submission: Submission,
    params: IssueParams,
) -> Result<Response, Response> {
    if let Some(pharmacy) = &params.target_pharmacy {
        let known = state
            .directory
            .get(pharmacy)
            .is_some_and(|o| o.role == Role::Pharmacy);
        if !known {
            return Err(invalid(vec![Issue::new(
                "value",
                "target_pharmacy",
                format!("{pharmacy:?} is not a pharmacy on the exchange"),
            )])
            .into_response());
        }
    }
    let fresh = SubmissionRow {
        prescription_id: format!("rx-{}", uuid::Uuid::now_v7().simple()),
        event_id: uuid::Uuid::now_v7().to_string(),
        access_code: access_code(),
        published: false,
    };
    let row = state
        .submissions
        .claim(&org.id, &submission.identifier, &fresh)
        .await
        .map_err(|e| unavailable(&format!("cannot record the submission: {e}")))?;
    let replayed = row.prescription_id != fresh.prescription_id;
    let event = prescription_issued(org, submission, &row, params.target_pharmacy);
    if !row.published {
        let delivery = state
            .publisher
            .publish(&event)
            .await
            .map_err(|e| unavailable(&format!("the prescription was not issued: {e}")))?;
        tracing::info!(
            prescription_id = %row.prescription_id,
            partition = delivery.partition,
            offset = delivery.offset,
            "prescription issued"
        );
        state
            .submissions
            .mark_published(&row.prescription_id)
            .await
            .map_err(|e| unavailable(&format!("issued, but not recorded: {e}")))?;
    }
    if let Err(e) = state
        .audit
        .record(
            &org.id,
            "prescription.issue",
            &row.prescription_id,
            &event.envelope.patient_ref,
        )
        .await
    {
        // The prescription is issued; losing its audit line must not make the clinic retry.
        tracing::error!(error = %e, prescription_id = %row.prescription_id, "audit write failed");
    }
    let body = json!({
        "prescription_id": row.prescription_id,
        "event_id": row.event_id,
        "access_code": row.access_code,
        "patient_ref": event.envelope.patient_ref,
        "target_pharmacy": event.target_pharmacy_org,
        "lines": event.lines.len(),
        "replayed": replayed,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn prescription_issued(
    org: &Organization,
    submission: Submission,
    row: &SubmissionRow,
    target_pharmacy: Option<String>,
) -> PrescriptionIssued {
    PrescriptionIssued {
        envelope: Envelope {
            event_id: row.event_id.clone(),
            occurred_at: Timestamp::now(),
            producer_org: org.id.clone(),
            patient_ref: submission.patient_ref,
            correlation_id: Some(row.prescription_id.clone()),
            causation_id: None,
        },
        prescription_id: row.prescription_id.clone(),
        prescriber: submission.prescriber,
        issuer: InstitutionRef {
            org_id: org.id.clone(),
            institution_code: org.institution_code.clone(),
            name: Some(org.name.clone()),
        },
        target_pharmacy_org: target_pharmacy,
        access_code: row.access_code.clone(),
        issued_on: submission.issued_on,
        expires_on: Some(submission.issued_on.plus_days(VALID_DAYS_AFTER_ISSUE)),
        lines: submission.lines,
        notes: submission.notes,
    }
}

/// 503: nothing was issued; the same request may be sent again.
fn unavailable(reason: &str) -> Response {
    tracing::warn!(reason, "submission failed");
    Rejected::new(
        StatusCode::SERVICE_UNAVAILABLE,
        vec![Issue::new(
            "transient",
            "$",
            format!("{reason}; retry the same request"),
        )],
    )
    .into_response()
}

/// Eight characters a patient can read out at a pharmacy: no 0/O or 1/I/L to confuse.
fn access_code() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(8)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A clinic-view error: `{"error": …, "reason": …}`.
fn error(status: StatusCode, error: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": error, "reason": reason.into() })),
    )
        .into_response()
}

fn view_failed(e: impl Into<ViewError>) -> Response {
    let e: ViewError = e.into();
    tracing::error!(error = %e, "clinic view failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the clinic view is unavailable; retry",
    )
}

fn not_found(id: &str) -> Response {
    // Also for another clinic's prescription: whether it exists is not theirs to know.
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("you issued no prescription {id}"),
    )
}

/// Every prescription the caller issued, with its status.
pub async fn list_issued(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, Response> {
    let org = caller
        .require(Action::ViewIssuedPrescriptions)
        .map_err(IntoResponse::into_response)?;
    let rows = state.view.list(&org.id).await.map_err(view_failed)?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        state
            .audit
            .record(
                &org.id,
                "clinic.list",
                &row.prescription_id,
                &row.patient_ref,
            )
            .await
            .map_err(view_failed)?;
        items.push(state.view.describe(row).await.map_err(view_failed)?);
    }
    Ok(Json(json!({ "issuer": org.id, "prescriptions": items })))
}

pub async fn get_issued(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Response> {
    let org = caller
        .require(Action::ViewIssuedPrescriptions)
        .map_err(IntoResponse::into_response)?;
    let row = state.view.get(&org.id, &id).await.map_err(view_failed)?;
    let row = row.ok_or_else(|| not_found(&id))?;
    state
        .audit
        .record(&org.id, "clinic.read", &id, &row.patient_ref)
        .await
        .map_err(view_failed)?;
    Ok(Json(state.view.describe(&row).await.map_err(view_failed)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    reason: String,
    cancelled_by: PractitionerRef,
}

/// Withdraws a prescription the caller issued, until it is dispensed.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Response> {
    let org = caller
        .require(Action::CancelPrescription)
        .map_err(IntoResponse::into_response)?;
    let request: CancelRequest = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    if request.reason.trim().is_empty() {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "a reason is required",
        ));
    }
    let row = state.view.get(&org.id, &id).await.map_err(view_failed)?;
    let row = row.ok_or_else(|| not_found(&id))?;
    match row.status.as_str() {
        "issued" | "claimed" => {}
        "dispensed" => {
            return Err(error(
                StatusCode::CONFLICT,
                "already_dispensed",
                format!("prescription {id} was already dispensed; it can no longer be cancelled"),
            ));
        }
        other => {
            return Err(error(
                StatusCode::CONFLICT,
                "not_cancellable",
                format!("prescription {id} is {other}"),
            ));
        }
    }
    let event = PrescriptionCancelled {
        envelope: Envelope {
            correlation_id: Some(id.clone()),
            ..Envelope::new(&org.id, &row.patient_ref)
        },
        prescription_id: id.clone(),
        cancelled_by: request.cancelled_by,
        reason: request.reason,
    };
    state.publisher.publish(&event).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the cancellation was not recorded ({e}); retry"),
        )
    })?;
    state
        .audit
        .record(&org.id, "clinic.cancel", &id, &row.patient_ref)
        .await
        .map_err(view_failed)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "prescription_id": id, "status": "cancellation requested", "event_id": event.envelope.event_id })),
    )
        .into_response())
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::access_code;

    #[test]
    fn access_codes_are_readable_and_differ() {
        let a = access_code();
        assert_eq!(a.len(), 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='9').contains(&c))
        );
        assert!(!a.contains(['0', 'O', '1', 'I', 'L']));
        assert_ne!(a, access_code());
    }
}
