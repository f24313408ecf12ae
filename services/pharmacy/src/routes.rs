//! The pharmacy API: the inbox (a list and a live stream), claiming open prescriptions with the
//! patient's access code, and dispensing.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use futures::Stream;
use hixbus_access::{Action, Caller, Directory, Organization};
use hixbus_bus::Publisher;
use hixbus_contracts::lifecycle::{self, MAX_OVER_DISPENSE_FACTOR};
use hixbus_contracts::{
    CodedConcept, DispensedLine, Envelope, MedicationLine, PractitionerRef, PrescriptionClaimed,
    PrescriptionDispensed, Quantity,
};
use hixbus_service::changes::{Reload, Shown};
use hixbus_service::{
    ApiError, ClientAddr, JsonPath, JsonQuery, PerKeyLimit, body, check_id, institution, text,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alerts::AlertLens;
use crate::changes::Changes;
use crate::claims::ClaimLimiter;
use crate::store::{PrescriptionRow, Status, Store, StoreError};
use hixbus_storage::AuditLog;

/// Request bodies (a claim, a dispensing) are small; this bounds memory, not use.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Inbox pages: the default and the most one request may ask for.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;
/// Inbox reads one pharmacy may have in progress at once: beyond that it waits its turn
/// (429) instead of holding the database from other pharmacies.
pub const INBOX_READS_PER_PHARMACY: usize = 4;
/// Live streams one pharmacy may hold open (a few screens per counter).
pub const STREAMS_PER_PHARMACY: usize = 16;
/// The longest identifier or name accepted in a request.
const MAX_NAME_CHARS: usize = 256;
/// The longest free text (notes, reasons) accepted in a request.
const MAX_TEXT_CHARS: usize = 1000;

/// Namespace of the ids of events that happen once per prescription (see [`once_id`]).
const ONCE_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6869_7862_7573_2d70_6861_726d_6163_7931);

/// The id of the one `what` event of a prescription: a retry after a publish whose
/// acknowledgement was lost (the record may be on the topic) sends the same event id again,
/// so every consumer sees one event, not two.
fn once_id(what: &str, prescription_id: &str) -> String {
    uuid::Uuid::new_v5(
        &ONCE_NAMESPACE,
        format!("{what}/{prescription_id}").as_bytes(),
    )
    .to_string()
}

/// JP drug code systems a substitute may be coded in.
const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
const YJ: &str = "urn:oid:1.2.392.100495.20.1.73";

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub publisher: Publisher,
    pub store: Store,
    pub audit: AuditLog,
    /// What each pharmacy is shown of the alerts (the patient's consent decides).
    pub alerts: AlertLens,
    pub changes: Changes,
    pub claims: Arc<ClaimLimiter>,
    pub inbox_reads: Arc<PerKeyLimit>,
    pub streams: Arc<PerKeyLimit>,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

fn store_failed(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "pharmacy store failed");
    ApiError::unavailable("the pharmacy store is unavailable; retry")
}

fn not_found(prescription_id: &str) -> ApiError {
    // The same answer whether it does not exist or belongs to another pharmacy: a pharmacy
    // must not learn which prescriptions exist elsewhere.
    let shown: String = prescription_id.chars().take(64).collect();
    ApiError::not_found(format!("no prescription {shown} in your inbox"))
}

/// A JSON request body of at most [`MAX_BODY_BYTES`].
async fn json_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    body::json(headers, body, MAX_BODY_BYTES).await
}

/// What a pharmacy sees of one prescription, with its alerts as `alerts` shows them to it.
fn inbox_item(row: &PrescriptionRow, alerts: Vec<Value>) -> Value {
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
        "alerts": alerts,
        "dispensed": row.dispensed,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxParams {
    #[serde(default)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    after: Option<String>,
    /// `newest`: from the latest prescription down (a counter's screen); `oldest`, the
    /// default, in order of issue (a client catching up).
    #[serde(default)]
    order: hixbus_service::ListOrder,
}

/// The inbox, a page at a time.
pub async fn inbox(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<InboxParams>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewPharmacyInbox)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let after = params.after.unwrap_or_default();
    text::check_line(&after, MAX_NAME_CHARS)
        .map_err(|p| ApiError::bad_request(format!("after {p}")))?;
    let Some(_permit) = state.inbox_reads.try_acquire(&org.id) else {
        return Err(ApiError::too_many(
            "too_many_reads",
            format!(
                "at most {INBOX_READS_PER_PHARMACY} inbox reads at once per pharmacy; retry shortly"
            ),
            std::time::Duration::from_secs(1),
        ));
    };
    let rows = state
        .store
        .inbox(
            &org.id,
            &after,
            limit,
            params.order == hixbus_service::ListOrder::Newest,
        )
        .await
        .map_err(store_failed)?;
    state
        .audit
        .record_all(
            &org.id,
            "inbox.read",
            rows.iter()
                .map(|r| (r.prescription_id.as_str(), r.patient_ref.as_str())),
        )
        .await
        .map_err(|e| store_failed(e.into()))?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let alerts = state.alerts.show(org, row).await.map_err(store_failed)?;
        items.push(inbox_item(row, alerts));
    }
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.prescription_id.clone()))
        .flatten();
    Ok(Json(
        json!({ "pharmacy": org.id, "prescriptions": items, "next": next }),
    ))
}

pub async fn prescription(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(id): JsonPath<String>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewPharmacyInbox)?;
    let row = own_row(&state.store, org, &id).await?;
    state
        .audit
        .record(&org.id, "prescription.read", &id, &row.patient_ref)
        .await
        .map_err(|e| store_failed(e.into()))?;
    let alerts = state.alerts.show(org, &row).await.map_err(store_failed)?;
    Ok(Json(inbox_item(&row, alerts)))
}

async fn own_row(store: &Store, org: &Organization, id: &str) -> Result<PrescriptionRow, ApiError> {
    check_id(id)?;
    match store.get(id).await.map_err(store_failed)? {
        Some(row) if row.holder.as_deref() == Some(org.id.as_str()) => Ok(row),
        _ => Err(not_found(id)),
    }
}

/// The inbox, live: one `prescription` event per change that concerns this pharmacy.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let org = caller.require(Action::ViewPharmacyInbox)?.clone();
    let Some(permit) = state.streams.try_acquire(&org.id) else {
        return Err(ApiError::too_many(
            "too_many_streams",
            format!(
                "at most {STREAMS_PER_PHARMACY} live streams at once per pharmacy; close one first"
            ),
            std::time::Duration::from_secs(5),
        ));
    };
    let lens = state.alerts.clone();
    Ok(state.changes.screen_async(
        state.audit.clone(),
        org,
        "inbox.stream",
        permit,
        move |org, row| {
            let lens = lens.clone();
            async move {
                if row.holder.as_deref() != Some(org.id.as_str()) {
                    return Ok(None);
                }
                // The alerts as the patient's consent has them at the moment of sending.
                let alerts = lens.show(&org, &row).await.map_err(|e| {
                    tracing::error!(error = %e, "alerts for a live inbox could not be decided");
                    Reload
                })?;
                Ok(Some(Shown {
                    event: "prescription",
                    data: inbox_item(&row, alerts).to_string(),
                    subject_id: row.prescription_id.clone(),
                    patient_ref: row.patient_ref.clone(),
                }))
            }
        },
    ))
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
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org = caller.require(Action::DispensePrescription)?;
    if let Err(wait) = state.claims.check(&org.id, client) {
        return Err(ApiError::too_many(
            "too_many_claims",
            format!(
                "too many wrong access codes from here in the last minute; retry in {} s",
                wait.as_secs().max(1)
            ),
            wait,
        ));
    }
    let request: ClaimRequest = json_body(&headers, body).await?;
    text::check_line(&request.access_code, 64)
        .map_err(|p| ApiError::invalid(format!("access_code {p}")))?;
    let candidates = state
        .store
        .find_open_by_code(&request.access_code)
        .await
        .map_err(store_failed)?;
    let mut claimed = Vec::new();
    for row in candidates {
        if row.status != Status::Issued || row.holder.is_some() {
            continue;
        }
        let taken = state
            .store
            .claim_audited(&row.prescription_id, &org.id, &row.patient_ref)
            .await
            .map_err(store_failed)?;
        if !taken {
            continue;
        }
        let event = PrescriptionClaimed {
            envelope: Envelope {
                event_id: once_id(&format!("claimed-by/{}", org.id), &row.prescription_id),
                causation_id: Some(row.issued.envelope.event_id.clone()),
                correlation_id: Some(row.prescription_id.clone()),
                ..Envelope::new(&org.id, &row.patient_ref)
            },
            prescription_id: row.prescription_id.clone(),
            issuer_org: row.issuer_org.clone(),
            pharmacy: institution(org),
        };
        if let Err(e) = state.publisher.publish(&event).await {
            state
                .store
                .unclaim(&row.prescription_id, &org.id)
                .await
                .map_err(store_failed)?;
            audit_best_effort(&state.audit, org, "claim.undone", &row).await;
            return Err(ApiError::unavailable(format!(
                "the claim was not recorded ({e}); retry"
            )));
        }
        state.changes.announce(&row.prescription_id).await;
        claimed.push(row.prescription_id);
    }
    if claimed.is_empty() {
        // Wrong code, already claimed by another pharmacy, or addressed to one: the patient
        // must ask the issuing clinic; which of these it is stays private.
        state.claims.failed(&org.id, client);
        return Err(ApiError::not_found(
            "no open prescription with this access code",
        ));
    }
    Ok((StatusCode::OK, Json(json!({ "claimed": claimed }))))
}

/// An audit entry for something that was undone: the change it records no longer stands, so
/// failing to write it is logged, not answered.
async fn audit_best_effort(
    audit: &AuditLog,
    org: &Organization,
    action: &str,
    row: &PrescriptionRow,
) {
    if let Err(e) = audit
        .record(&org.id, action, &row.prescription_id, &row.patient_ref)
        .await
    {
        tracing::error!(error = %e, action, prescription_id = %row.prescription_id, "audit write failed");
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
    /// Why it differs from the prescription; required to hand over more than prescribed.
    #[serde(default)]
    reason: Option<String>,
}

impl DispenseRequest {
    /// The free-text and identifier fields, checked like every text a service stores.
    fn check_text(&self) -> Result<(), ApiError> {
        let p = &self.pharmacist;
        if p.id.trim().is_empty() {
            return Err(ApiError::invalid("pharmacist.id is required"));
        }
        let names = [
            ("pharmacist.id", Some(&p.id)),
            ("pharmacist.name", p.name.as_ref()),
            ("pharmacist.department", p.department.as_ref()),
        ];
        for (field, value) in names {
            if let Some(value) = value {
                text::check_line(value, MAX_NAME_CHARS)
                    .map_err(|e| ApiError::invalid(format!("{field} {e}")))?;
            }
        }
        if let Some(notes) = &self.notes {
            text::check(notes, MAX_TEXT_CHARS)
                .map_err(|e| ApiError::invalid(format!("notes {e}")))?;
        }
        Ok(())
    }
}

/// Dispenses a prescription in this pharmacy's inbox, once.
pub async fn dispense(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(id): JsonPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::DispensePrescription)?;
    let request: DispenseRequest = json_body(&headers, body).await?;
    request.check_text()?;
    let row = own_row(&state.store, org, &id).await?;
    // A dispensing this pharmacy began and whose publication was cut short (its answer lost, the
    // service restarted): publish that same event again, whatever this request says.
    if row.status == Status::Dispensing
        && let Some(begun) = state
            .store
            .begun_dispensing(&id, &org.id)
            .await
            .map_err(store_failed)?
    {
        tracing::info!(prescription_id = %id, "resuming a dispensing begun earlier");
        return publish_dispensing(&state, org, &row, begun, false).await;
    }
    let lines = dispensed_lines(&row, request.lines)?;
    if matches!(
        row.status,
        Status::Dispensed | Status::Dispensing | Status::Cancelled
    ) {
        return Err(refusal(&state.store, &id).await);
    }
    lifecycle::check_dispensable(
        row.issued.issued_on,
        row.issued.expires_on,
        lifecycle::today_in_japan(),
    )
    .map_err(|why| {
        let error = match why {
            lifecycle::NotDispensable::Expired { .. } => "expired",
            lifecycle::NotDispensable::NotYetValid { .. } => "not_yet_valid",
        };
        ApiError::conflict(error, format!("prescription {id}: {why}"))
    })?;
    let partial = lines.len() < row.issued.lines.len();
    let event = PrescriptionDispensed {
        envelope: Envelope {
            event_id: once_id("dispensed", &id),
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
    let taken = state
        .store
        .begin_dispensing(&event, &row.patient_ref)
        .await
        .map_err(store_failed)?;
    if !taken {
        return Err(refusal(&state.store, &id).await);
    }
    publish_dispensing(&state, org, &row, event, true).await
}

/// Publishes a dispensing begun in the store, then records it. A first attempt whose
/// publication fails gives the right to dispense back (`give_back`); a resumed one keeps it, since
/// the earlier attempt may have reached the broker after all.
async fn publish_dispensing(
    state: &AppState,
    org: &Organization,
    row: &PrescriptionRow,
    event: PrescriptionDispensed,
    give_back: bool,
) -> Result<Json<Value>, ApiError> {
    let id = &event.prescription_id;
    if let Err(e) = state.publisher.publish(&event).await {
        if give_back {
            state
                .store
                .abort_dispensing(id)
                .await
                .map_err(store_failed)?;
            audit_best_effort(&state.audit, org, "dispense.undone", row).await;
        }
        return Err(ApiError::unavailable(format!(
            "the dispensing was not recorded ({e}); retry"
        )));
    }
    // The dispensing is on the bus and audited: it took effect. If recording it here fails, the
    // projector records it from the topic; the pharmacist must not be told to dispense again.
    if let Err(e) = state.store.record_dispensed(&event).await {
        tracing::error!(error = %e, prescription_id = %id, "dispensing published but not yet recorded; the projector will");
    }
    state.changes.announce(id).await;
    Ok(Json(json!({
        "prescription_id": id,
        "status": "dispensed",
        "event_id": event.envelope.event_id,
        "partial": event.partial,
        "lines": event.lines,
    })))
}

/// At start: publishes again every dispensing begun and not recorded, which a crash of an
/// earlier process may have left unpublished (the event id is the same, so one that did reach
/// the bus is not applied twice downstream).
pub async fn resume_dispensings(store: Store, publisher: Publisher, changes: Changes) {
    let pending = match store.pending_dispensings().await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!(error = %e, "cannot list dispensings begun before this start");
            return;
        }
    };
    for event in pending {
        let id = event.prescription_id.clone();
        match publisher.publish(&event).await {
            Ok(_) => {
                if let Err(e) = store.record_dispensed(&event).await {
                    tracing::warn!(error = %e, prescription_id = %id, "resumed dispensing not recorded yet; the projector will");
                }
                changes.announce(&id).await;
                tracing::info!(prescription_id = %id, "dispensing begun before a restart published");
            }
            // Left as begun: the pharmacy's retry, or the next start, publishes it.
            Err(e) => {
                tracing::warn!(error = %e, prescription_id = %id, "dispensing begun before a restart not published yet");
            }
        }
    }
}

/// Why a prescription cannot be dispensed now.
async fn refusal(store: &Store, id: &str) -> ApiError {
    match store.get(id).await {
        Ok(Some(row)) => match row.status {
            Status::Dispensed | Status::Dispensing => ApiError::conflict(
                "already_dispensed",
                format!(
                    "prescription {id} was already dispensed by {}",
                    row.dispensed_by.as_deref().unwrap_or("another pharmacy")
                ),
            ),
            Status::Cancelled => ApiError::conflict(
                "cancelled",
                format!("prescription {id} was cancelled by {}", row.issuer_org),
            ),
            Status::Issued | Status::Claimed => not_found(id),
        },
        Ok(None) => not_found(id),
        Err(e) => store_failed(e),
    }
}

fn dispensed_lines(
    row: &PrescriptionRow,
    requested: Option<Vec<DispenseLine>>,
) -> Result<Vec<DispensedLine>, ApiError> {
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
        return Err(ApiError::invalid("dispense at least one line"));
    }
    if requested.len() > row.issued.lines.len() {
        return Err(ApiError::invalid(format!(
            "the prescription has {} lines; {} were sent",
            row.issued.lines.len(),
            requested.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut lines = Vec::with_capacity(requested.len());
    for line in requested {
        let prescribed = row
            .issued
            .lines
            .iter()
            .find(|l| l.line_no == line.line_no)
            .ok_or_else(|| {
                ApiError::invalid(format!("the prescription has no line {}", line.line_no))
            })?;
        if !seen.insert(line.line_no) {
            return Err(ApiError::invalid(format!(
                "line {} is listed twice",
                line.line_no
            )));
        }
        lines.push(dispensed_line(prescribed, line)?);
    }
    Ok(lines)
}

/// One dispensed line, checked against what was prescribed: a pharmacist hands over at most
/// what was prescribed (up to twice as much of the same unit only with a stated reason, for a
/// change of strength), in the prescribed unit, for no more days, and substitutes only where
/// the prescriber allowed it, with a product coded in a drug code system.
fn dispensed_line(
    prescribed: &MedicationLine,
    line: DispenseLine,
) -> Result<DispensedLine, ApiError> {
    let n = line.line_no;
    let invalid = |why: String| ApiError::invalid(format!("line {n}: {why}"));
    if let Some(reason) = &line.reason {
        text::check(reason, MAX_TEXT_CHARS).map_err(|p| invalid(format!("reason {p}")))?;
    }
    let has_reason = line.reason.as_deref().is_some_and(|r| !r.trim().is_empty());
    if let Some(substitute) = &line.substitute {
        if !prescribed.generic_substitution_allowed {
            return Err(invalid(
                "the prescriber did not allow substitution (変更不可)".to_owned(),
            ));
        }
        check_substitute(substitute, &prescribed.drug).map_err(invalid)?;
    }
    let quantity = line.quantity.unwrap_or_else(|| prescribed.quantity.clone());
    if !lifecycle::plausible_quantity(quantity.value) {
        return Err(invalid(format!(
            "quantity must be positive and at most {}, got {}",
            lifecycle::MAX_QUANTITY,
            quantity.value
        )));
    }
    if quantity.unit.trim() != prescribed.quantity.unit.trim() {
        return Err(invalid(format!(
            "quantity is in {:?} but the prescription is in {:?}; record it in the prescribed unit",
            quantity.unit, prescribed.quantity.unit
        )));
    }
    let limit = prescribed.quantity.value * MAX_OVER_DISPENSE_FACTOR;
    if quantity.value > prescribed.quantity.value && !has_reason {
        return Err(invalid(format!(
            "{} {} is more than the {} {} prescribed; state the reason (e.g. a change of strength)",
            quantity.value, quantity.unit, prescribed.quantity.value, prescribed.quantity.unit
        )));
    }
    if quantity.value > limit {
        return Err(invalid(format!(
            "{} {} is more than twice the {} {} prescribed",
            quantity.value, quantity.unit, prescribed.quantity.value, prescribed.quantity.unit
        )));
    }
    let days_supply = match (line.days_supply, prescribed.days_supply) {
        (None, prescribed) => prescribed,
        (Some(days), _) if !lifecycle::plausible_days_supply(days) => {
            return Err(invalid(format!(
                "days_supply must be from 1 to {}, got {days}",
                lifecycle::MAX_DAYS_SUPPLY
            )));
        }
        (Some(days), Some(max)) if days > max => {
            return Err(invalid(format!(
                "days_supply {days} is more than the {max} days prescribed"
            )));
        }
        (Some(days), _) => Some(days),
    };
    Ok(DispensedLine {
        prescription_line_no: n,
        substituted: line.substitute.is_some(),
        drug: line.substitute.unwrap_or_else(|| prescribed.drug.clone()),
        quantity,
        days_supply,
        substitution_reason: line.reason,
    })
}

/// A substitute must be a product: coded in HOT9 (9 digits) or YJ (12 characters), or in the
/// prescribed drug's own code system.
fn check_substitute(substitute: &CodedConcept, prescribed: &CodedConcept) -> Result<(), String> {
    let code = substitute.code.as_str();
    let well_formed = match substitute.system.as_str() {
        HOT9 => code.len() == 9 && code.bytes().all(|b| b.is_ascii_digit()),
        YJ => code.len() == 12 && code.bytes().all(|b| b.is_ascii_alphanumeric()),
        system if system == prescribed.system => {
            !code.is_empty() && text::check_line(code, 64).is_ok()
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(format!(
                "a substitute is coded in HOT9 ({HOT9}) or YJ ({YJ}), not {shown:?}"
            ));
        }
    };
    if !well_formed {
        let shown: String = code.chars().take(64).collect();
        return Err(format!(
            "{shown:?} is not a valid code in {}",
            substitute.system
        ));
    }
    if let Some(display) = &substitute.display {
        text::check_line(display, MAX_NAME_CHARS).map_err(|p| format!("substitute.display {p}"))?;
    }
    Ok(())
}
