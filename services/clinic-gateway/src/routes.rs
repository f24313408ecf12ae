//! The gateway's HTTP API (FHIR in, JSON out).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hixbus_access::codes::{self, CodeKeys};
use hixbus_access::{Action, Caller, Directory, Organization, Role};
use hixbus_bus::Publisher;
use hixbus_contracts::lifecycle::{self, Status, Transition};
use hixbus_contracts::{
    Coverage, Envelope, LinkSource, PractitionerRef, PrescriptionCancelled, PrescriptionIssued,
    Timestamp,
};
use hixbus_service::fhir::{FhirError, Issue, Outcome};
use hixbus_service::{ApiError, JsonPath, JsonQuery, body, check_id, text};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fhir::{self, MAX_IDENTIFIER_CHARS, Submission};
use crate::store::{SubmissionRow, Submissions};
use crate::view::{ClinicView, ViewError};
use hixbus_service::identity::link_patient;
use hixbus_storage::{AuditLog, Links};

/// FHIR prescription bundles are tens of kilobytes; this bounds memory, not use.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// A cancellation is a reason and a practitioner.
const MAX_CANCEL_BYTES: usize = 16 * 1024;
/// Clinic-view pages: the default and the most one request may ask for.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub publisher: Publisher,
    pub submissions: Submissions,
    pub view: ClinicView,
    pub audit: AuditLog,
    pub codes: Arc<CodeKeys>,
    pub inbox: crate::results_api::Inbox,
    pub links: Links,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueParams {
    /// The pharmacy the patient chose; absent for an open prescription that any pharmacy can
    /// claim with the access code.
    target_pharmacy: Option<String>,
    /// FHIR's general parameters, which clients send out of habit: accepted, and ignored
    /// (answers are always JSON).
    #[serde(default, rename = "_format")]
    _format: Option<String>,
    #[serde(default, rename = "_pretty")]
    _pretty: Option<String>,
}

/// How a resource type becomes a submission.
type Reader = fn(&Value, &str) -> Result<Submission, Vec<Issue>>;

/// The query of a FHIR submission; a malformed one is answered with an `OperationOutcome`.
type IssueQuery = Result<Query<IssueParams>, QueryRejection>;

fn issue_params(query: IssueQuery) -> Result<IssueParams, Outcome> {
    query.map(|q| q.0).map_err(|e| {
        Outcome::one(
            StatusCode::BAD_REQUEST,
            "structure",
            "$query",
            e.body_text(),
        )
    })
}

pub async fn post_bundle(
    State(state): State<AppState>,
    caller: Caller,
    query: IssueQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    let params = issue_params(query)?;
    submit(&state, &caller, params, &headers, body, fhir::read_bundle).await
}

pub async fn post_medication_request(
    State(state): State<AppState>,
    caller: Caller,
    query: IssueQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    let params = issue_params(query)?;
    submit(
        &state,
        &caller,
        params,
        &headers,
        body,
        fhir::read_medication_request,
    )
    .await
}

async fn submit(
    state: &AppState,
    caller: &Caller,
    params: IssueParams,
    headers: &HeaderMap,
    body: Body,
    read: Reader,
) -> Result<Response, FhirError> {
    let org = caller.require(Action::IssuePrescription)?;
    hixbus_service::fhir::require_media_type(headers)?;
    let body = body::read(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| Outcome::one(e.status(), "too-costly", "$", format!("{e}")))?;
    let json = hixbus_service::fhir::parse(&body)?;
    let problems = hixbus_service::fhir::text_problems(&json);
    if !problems.is_empty() {
        return Err(FhirError::from(Outcome::invalid(problems)));
    }
    let submission = read(&json, &org.id).map_err(Outcome::invalid)?;
    if let Err(problem) =
        lifecycle::check_issue_date(submission.issued_on, lifecycle::today_in_japan())
    {
        return Err(FhirError::from(Outcome::one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value",
            submission.issued_on_at,
            problem.to_string(),
        )));
    }
    issue(state, org, submission, params).await
}

/// The digest a resubmission is compared by: the normalized submission (what the gateway read
/// from the request, so formatting and key order do not matter) and where it is addressed.
fn request_digest(submission: &Submission, target_pharmacy: Option<&str>) -> String {
    let normalized = json!({ "submission": submission, "target_pharmacy": target_pharmacy });
    hex::encode(Sha256::digest(normalized.to_string().as_bytes()))
}

async fn issue(
    state: &AppState,
    org: &Organization,
    submission: Submission,
    params: IssueParams,
) -> Result<Response, FhirError> {
    if let Some(pharmacy) = &params.target_pharmacy {
        let known = state
            .directory
            .get(pharmacy)
            .is_some_and(|o| o.role == Role::Pharmacy);
        if !known {
            let shown: String = pharmacy.chars().take(64).collect();
            return Err(FhirError::from(Outcome::invalid(vec![Issue::new(
                "value",
                "target_pharmacy",
                format!("{shown:?} is not a pharmacy on the exchange"),
            )])));
        }
    }
    let digest = request_digest(&submission, params.target_pharmacy.as_deref());
    let fresh = SubmissionRow {
        prescription_id: format!("rx-{}", uuid::Uuid::now_v7().simple()),
        event_id: uuid::Uuid::now_v7().to_string(),
        access_code: codes::new_code(),
        published: false,
        request_sha256: Some(digest.clone()),
    };
    let row = state
        .submissions
        .claim(&org.id, &submission.identifier, &fresh)
        .await
        .map_err(|e| unavailable(&format!("cannot record the submission: {e}")))?;
    let replayed = row.prescription_id != fresh.prescription_id;
    if replayed && row.request_sha256.as_ref().is_some_and(|d| *d != digest) {
        return Err(FhirError::from(Outcome::one(
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate",
            "Bundle.identifier",
            format!(
                "the identifier {:?} was already used for prescription {} with other content; a resubmission must be the same request, and a new prescription needs a new identifier",
                submission.identifier, row.prescription_id
            ),
        )));
    }
    let learned = submission.patient_local_id.clone();
    let event = prescription_issued(
        org,
        submission,
        &row,
        params.target_pharmacy,
        &state.codes,
        &state.directory,
    );
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
    // The prescription named the patient by the clinic's own id and by insurance: the identity
    // rule learns the link, off the clinic's request path. The prescription is issued either
    // way; a link not made now is made with the patient's next prescription.
    if let Some(local_id) = learned {
        let (publisher, links) = (state.publisher.clone(), state.links.clone());
        let (org_id, patient_ref) = (org.id.clone(), event.envelope.patient_ref.clone());
        tokio::spawn(async move {
            let linked = link_patient(
                &publisher,
                &links,
                &org_id,
                &local_id,
                &patient_ref,
                LinkSource::Prescription,
            )
            .await;
            if let Err(e) = linked {
                tracing::warn!(error = %e, org = %org_id, "patient link from a prescription not made");
            }
        });
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
    codes: &CodeKeys,
    directory: &Directory,
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
        issuer: hixbus_service::institution(org),
        target_pharmacy_org: target_pharmacy,
        access_code: String::new(),
        issued_on: submission.issued_on,
        expires_on: Some(lifecycle::expires_on(submission.issued_on)),
        lines: submission.lines,
        notes: submission.notes,
        access_code_digest: Some(codes.digest(&row.access_code)),
        coverage: submission.coverage.map(|coverage| {
            let insurer_org = directory
                .with_institution_code(&coverage.insurer_number)
                .find(|o| o.role == Role::Insurer)
                .map(|o| o.id.clone());
            Coverage {
                insurer_org,
                ..coverage
            }
        }),
    }
}

/// 503: nothing was issued; the same request may be sent again.
fn unavailable(reason: &str) -> Outcome {
    tracing::warn!(reason, "submission failed");
    Outcome::one(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        "$",
        format!("{reason}; retry the same request"),
    )
}

fn view_failed(e: impl Into<ViewError>) -> ApiError {
    let e: ViewError = e.into();
    tracing::error!(error = %e, "clinic view failed");
    ApiError::unavailable("the clinic view is unavailable; retry")
}

fn not_found(id: &str) -> ApiError {
    // Also for another clinic's prescription: whether it exists is not theirs to know.
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(format!("you issued no prescription {shown}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    after: Option<String>,
    /// `newest`: from the latest prescription down (the console); `oldest`, the default, in
    /// order of issue.
    #[serde(default)]
    order: hixbus_service::ListOrder,
}

/// The prescriptions the caller issued, with their status, a page at a time.
pub async fn list_issued(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewIssuedPrescriptions)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let after = params.after.unwrap_or_default();
    text::check_line(&after, MAX_IDENTIFIER_CHARS)
        .map_err(|p| ApiError::bad_request(format!("after {p}")))?;
    let rows = state
        .view
        .list(
            &org.id,
            &after,
            limit,
            params.order == hixbus_service::ListOrder::Newest,
        )
        .await
        .map_err(view_failed)?;
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
        items.push(
            state
                .view
                .describe(org, row, &state.audit)
                .await
                .map_err(view_failed)?,
        );
    }
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.prescription_id.clone()))
        .flatten();
    Ok(Json(
        json!({ "issuer": org.id, "prescriptions": items, "next": next }),
    ))
}

pub async fn get_issued(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(id): JsonPath<String>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewIssuedPrescriptions)?;
    check_id(&id)?;
    let row = state.view.get(&org.id, &id).await.map_err(view_failed)?;
    let row = row.ok_or_else(|| not_found(&id))?;
    state
        .audit
        .record(&org.id, "clinic.read", &id, &row.patient_ref)
        .await
        .map_err(view_failed)?;
    Ok(Json(
        state
            .view
            .describe(org, &row, &state.audit)
            .await
            .map_err(view_failed)?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    reason: String,
    cancelled_by: PractitionerRef,
}

/// The most characters a cancellation reason may have.
const MAX_REASON_CHARS: usize = 1000;

impl CancelRequest {
    fn check(&self) -> Result<(), ApiError> {
        if self.reason.trim().is_empty() {
            return Err(ApiError::invalid("a reason is required"));
        }
        text::check(&self.reason, MAX_REASON_CHARS)
            .map_err(|p| ApiError::invalid(format!("reason {p}")))?;
        let by = &self.cancelled_by;
        for (field, value) in [
            ("cancelled_by.id", Some(&by.id)),
            ("cancelled_by.name", by.name.as_ref()),
            ("cancelled_by.department", by.department.as_ref()),
        ] {
            if let Some(value) = value {
                text::check_line(value, MAX_IDENTIFIER_CHARS)
                    .map_err(|p| ApiError::invalid(format!("{field} {p}")))?;
            }
        }
        if by.id.trim().is_empty() {
            return Err(ApiError::invalid("cancelled_by.id is required"));
        }
        Ok(())
    }
}

/// Asks to withdraw a prescription the caller issued. Whether it is withdrawn is decided where
/// dispensing is: if a pharmacy has already begun dispensing, it stays dispensed. So the answer
/// is "requested", and the prescription's `cancellation.outcome` tells what became of it.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(id): JsonPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let org = caller.require(Action::CancelPrescription)?;
    check_id(&id)?;
    let request: CancelRequest = body::json(&headers, body, MAX_CANCEL_BYTES).await?;
    request.check()?;
    let row = state.view.get(&org.id, &id).await.map_err(view_failed)?;
    let row = row.ok_or_else(|| not_found(&id))?;
    if !Transition::Cancel.from().contains(&row.status) {
        return Err(match row.status {
            Status::Dispensed | Status::Dispensing => ApiError::conflict(
                "already_dispensed",
                format!("prescription {id} was already dispensed; it can no longer be cancelled"),
            ),
            other => ApiError::conflict("not_cancellable", format!("prescription {id} is {other}")),
        });
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
        ApiError::unavailable(format!("the cancellation was not recorded ({e}); retry"))
    })?;
    if let Err(e) = state
        .audit
        .record(&org.id, "clinic.cancel", &id, &row.patient_ref)
        .await
    {
        // The request is on the bus; the clinic must not be told to send it again.
        tracing::error!(error = %e, prescription_id = %id, "audit write failed");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "prescription_id": id,
            "status": "cancellation_requested",
            "outcome": "pending",
            "explanation": "the cancellation takes effect unless a pharmacy has already begun dispensing; GET this prescription for its cancellation.outcome",
            "event_id": event.envelope.event_id,
        })),
    )
        .into_response())
}
