//! The pharmacy API: the inbox (a list and a live stream), claiming open prescriptions with the
//! patient's access code, and dispensing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use hixbus_access::{Action, Caller, Denied, Directory, Organization};
use hixbus_bus::Publisher;
use hixbus_contracts::{
    CodedConcept, DispensedLine, Envelope, InstitutionRef, PractitionerRef, PrescriptionClaimed,
    PrescriptionDispensed, Quantity,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::changes::{Changed, Changes};
use crate::claims::{CLAIMS_PER_MINUTE, ClaimLimiter};
use crate::store::{PrescriptionRow, Status, Store, StoreError};
use hixbus_storage::AuditLog;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub publisher: Publisher,
    pub store: Store,
    pub audit: AuditLog,
    pub changes: Changes,
    pub claims: Arc<ClaimLimiter>,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

/// An error answer: `{"error": …, "reason": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            error,
            reason: reason.into(),
            retry_after: None,
        }
    }

    fn not_found(prescription_id: &str) -> Self {
        // The same answer whether it does not exist or belongs to another pharmacy: a pharmacy
        // must not learn which prescriptions exist elsewhere.
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no prescription {prescription_id} in your inbox"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.error, "reason": self.reason })),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated(reason) => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", reason)
            }
            Denied::Forbidden(reason) => Self::new(StatusCode::FORBIDDEN, "forbidden", reason),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "pharmacy store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the pharmacy store is unavailable; retry",
        )
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
}

/// What a pharmacy sees of one prescription.
fn inbox_item(row: &PrescriptionRow) -> Value {
    let date = |d: Option<hixbus_contracts::Date>| {
        d.and_then(|d| d.to_naive_date()).map(|d| d.to_string())
    };
    json!({
        "prescription_id": row.prescription_id,
        "status": row.status.as_str(),
        "issuer_org": row.issuer_org,
        "patient_ref": row.patient_ref,
        "target_pharmacy": row.target_pharmacy,
        "issued_on": date(Some(row.issued.issued_on)),
        "expires_on": date(row.issued.expires_on),
        "prescriber": row.issued.prescriber,
        "issuer": row.issued.issuer,
        "lines": row.issued.lines,
        "notes": row.issued.notes,
        "alerts": row.alerts,
        "dispensed": row.dispensed,
    })
}

pub async fn inbox(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewPharmacyInbox)?;
    let rows = state.store.inbox(&org.id).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        state
            .audit
            .record(
                &org.id,
                "inbox.read",
                &row.prescription_id,
                &row.patient_ref,
            )
            .await?;
        items.push(inbox_item(row));
    }
    Ok(Json(json!({ "pharmacy": org.id, "prescriptions": items })))
}

pub async fn prescription(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewPharmacyInbox)?;
    let row = own_row(&state.store, org, &id).await?;
    state
        .audit
        .record(&org.id, "prescription.read", &id, &row.patient_ref)
        .await?;
    Ok(Json(inbox_item(&row)))
}

async fn own_row(store: &Store, org: &Organization, id: &str) -> Result<PrescriptionRow, ApiError> {
    match store.get(id).await? {
        Some(row) if row.holder.as_deref() == Some(org.id.as_str()) => Ok(row),
        _ => Err(ApiError::not_found(id)),
    }
}

/// The inbox, live: one `prescription` event per change that concerns this pharmacy.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let org = caller.require(Action::ViewPharmacyInbox)?.clone();
    let receiver = state.changes.subscribe();
    let ending = state.changes.ending();
    let audit = state.audit.clone();
    let events = futures::stream::unfold(
        (receiver, audit, org),
        |(mut receiver, audit, org)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(Changed::Prescription(row))
                        if row.holder.as_deref() == Some(org.id.as_str()) =>
                    {
                        delivery(&audit, &org, &row).await
                    }
                    Ok(Changed::Prescription(_)) => continue,
                    // Too slow to keep up, or changes were missed: the screen reloads its inbox.
                    Ok(Changed::Missed) | Err(RecvError::Lagged(_)) => resync(),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, audit, org)));
            }
        },
    )
    .take_until(ending);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The stream event for one changed prescription, already checked to be `org`'s. Nothing is
/// delivered unaudited: if the audit cannot be written, the screen is told to reload instead
/// (through the inbox, which audits or answers 503), so it neither sees unaudited data nor
/// silently misses the change.
async fn delivery(audit: &AuditLog, org: &Organization, row: &PrescriptionRow) -> SseEvent {
    let audited = audit
        .record(
            &org.id,
            "inbox.stream",
            &row.prescription_id,
            &row.patient_ref,
        )
        .await;
    if let Err(e) = audited {
        tracing::error!(error = %e, prescription_id = %row.prescription_id, "delivery audit failed; screen told to reload");
        return resync();
    }
    SseEvent::default()
        .event("prescription")
        .data(inbox_item(row).to_string())
}

fn resync() -> SseEvent {
    SseEvent::default().event("resync").data("{}")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    access_code: String,
}

/// Takes the open prescriptions behind a patient's access code.
pub async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org = caller.require(Action::DispensePrescription)?;
    if let Err(wait) = state.claims.check(&org.id) {
        tracing::warn!(org = %org.id, "access-code claims over the limit; refused");
        return Err(ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_claims",
                format!(
                    "more than {CLAIMS_PER_MINUTE} access-code claims a minute; retry in {} s",
                    wait.as_secs().max(1)
                ),
            )
        });
    }
    let request: ClaimRequest = parse_body(&body)?;
    let candidates = state.store.find_open_by_code(&request.access_code).await?;
    let mut claimed = Vec::new();
    for row in candidates {
        if row.status != Status::Issued || row.holder.is_some() {
            continue;
        }
        if !state.store.claim(&row.prescription_id, &org.id).await? {
            continue;
        }
        let event = PrescriptionClaimed {
            envelope: Envelope {
                causation_id: Some(row.issued.envelope.event_id.clone()),
                correlation_id: Some(row.prescription_id.clone()),
                ..Envelope::new(&org.id, &row.patient_ref)
            },
            prescription_id: row.prescription_id.clone(),
            issuer_org: row.issuer_org.clone(),
            pharmacy: institution(org),
        };
        if let Err(e) = state.publisher.publish(&event).await {
            state.store.unclaim(&row.prescription_id, &org.id).await?;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the claim was not recorded ({e}); retry"),
            ));
        }
        state
            .audit
            .record(&org.id, "claim", &row.prescription_id, &row.patient_ref)
            .await?;
        state
            .changes
            .announce(&state.store, &row.prescription_id)
            .await;
        claimed.push(row.prescription_id);
    }
    if claimed.is_empty() {
        // Wrong code, already claimed by another pharmacy, or addressed to one: the patient
        // must ask the issuing clinic; which of these it is stays private.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no open prescription with this access code",
        ));
    }
    Ok((StatusCode::OK, Json(json!({ "claimed": claimed }))))
}

fn institution(org: &Organization) -> InstitutionRef {
    InstitutionRef {
        org_id: org.id.clone(),
        institution_code: org.institution_code.clone(),
        name: Some(org.name.clone()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispenseRequest {
    pharmacist: PractitionerRef,
    /// What was handed over, line by line; absent: every line as prescribed.
    #[serde(default)]
    lines: Option<Vec<DispenseLine>>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispenseLine {
    line_no: i32,
    /// The product handed over instead of the prescribed one (generic substitution).
    #[serde(default)]
    substitute: Option<CodedConcept>,
    #[serde(default)]
    quantity: Option<Quantity>,
    #[serde(default)]
    days_supply: Option<i32>,
    #[serde(default)]
    reason: Option<String>,
}

/// Dispenses a prescription in this pharmacy's inbox, once.
pub async fn dispense(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::DispensePrescription)?;
    let request: DispenseRequest = parse_body(&body)?;
    let row = own_row(&state.store, org, &id).await?;
    let lines = dispensed_lines(&row, request.lines)?;
    if matches!(
        row.status,
        Status::Dispensed | Status::Dispensing | Status::Cancelled
    ) {
        return Err(refusal(&state.store, &id).await);
    }
    if let Some(expires) = row.issued.expires_on.and_then(|d| d.to_naive_date())
        && chrono::Utc::now().date_naive() > expires
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "expired",
            format!("prescription {id} expired on {expires}"),
        ));
    }
    if !state.store.begin_dispensing(&id, &org.id).await? {
        return Err(refusal(&state.store, &id).await);
    }
    let partial = lines.len() < row.issued.lines.len();
    let event = PrescriptionDispensed {
        envelope: Envelope {
            causation_id: Some(row.issued.envelope.event_id.clone()),
            correlation_id: Some(id.clone()),
            ..Envelope::new(&org.id, &row.patient_ref)
        },
        prescription_id: id.clone(),
        issuer_org: row.issuer_org.clone(),
        pharmacy: institution(org),
        pharmacist: request.pharmacist,
        lines,
        partial,
        notes: request.notes,
    };
    if let Err(e) = state.publisher.publish(&event).await {
        state.store.abort_dispensing(&id).await?;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the dispensing was not recorded ({e}); retry"),
        ));
    }
    state.store.record_dispensed(&event).await?;
    state
        .audit
        .record(&org.id, "dispense", &id, &row.patient_ref)
        .await?;
    state.changes.announce(&state.store, &id).await;
    Ok(Json(json!({
        "prescription_id": id,
        "status": "dispensed",
        "event_id": event.envelope.event_id,
        "partial": partial,
        "lines": event.lines,
    })))
}

/// Why a prescription cannot be dispensed now.
async fn refusal(store: &Store, id: &str) -> ApiError {
    let conflict = |error, reason: String| ApiError::new(StatusCode::CONFLICT, error, reason);
    match store.get(id).await {
        Ok(Some(row)) => match row.status {
            Status::Dispensed | Status::Dispensing => conflict(
                "already_dispensed",
                format!(
                    "prescription {id} was already dispensed by {}",
                    row.dispensed_by.as_deref().unwrap_or("another pharmacy")
                ),
            ),
            Status::Cancelled => conflict(
                "cancelled",
                format!("prescription {id} was cancelled by {}", row.issuer_org),
            ),
            Status::Issued | Status::Claimed => ApiError::not_found(id),
        },
        Ok(None) => ApiError::not_found(id),
        Err(e) => e.into(),
    }
}

fn dispensed_lines(
    row: &PrescriptionRow,
    requested: Option<Vec<DispenseLine>>,
) -> Result<Vec<DispensedLine>, ApiError> {
    let invalid =
        |reason: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", reason);
    let Some(requested) = requested else {
        return Ok(row
            .issued
            .lines
            .iter()
            .map(|l| DispensedLine {
                prescription_line_no: l.line_no,
                drug: l.drug.clone(),
                quantity: l.quantity.clone(),
                days_supply: l.days_supply,
                substituted: false,
                substitution_reason: None,
            })
            .collect());
    };
    if requested.is_empty() {
        return Err(invalid("dispense at least one line".to_owned()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut lines = Vec::with_capacity(requested.len());
    for line in requested {
        let prescribed = row
            .issued
            .lines
            .iter()
            .find(|l| l.line_no == line.line_no)
            .ok_or_else(|| invalid(format!("the prescription has no line {}", line.line_no)))?;
        if !seen.insert(line.line_no) {
            return Err(invalid(format!("line {} is listed twice", line.line_no)));
        }
        if line.substitute.is_some() && !prescribed.generic_substitution_allowed {
            return Err(invalid(format!(
                "line {}: the prescriber did not allow substitution (変更不可)",
                line.line_no
            )));
        }
        let quantity = line.quantity.unwrap_or_else(|| prescribed.quantity.clone());
        if !(quantity.value > 0.0 && quantity.value.is_finite()) {
            return Err(invalid(format!(
                "line {}: quantity must be positive",
                line.line_no
            )));
        }
        lines.push(DispensedLine {
            prescription_line_no: line.line_no,
            substituted: line.substitute.is_some(),
            drug: line.substitute.unwrap_or_else(|| prescribed.drug.clone()),
            quantity,
            days_supply: line.days_supply.or(prescribed.days_supply),
            substitution_reason: line.reason,
        });
    }
    Ok(lines)
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
