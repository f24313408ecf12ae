//! The results inbox API: `GET /clinic/results` (critical results awaiting acknowledgement on
//! top, by age; then the reports, newest first), one report with its versions, the live stream,
//! and acknowledging a critical result. A clinic sees only what it ordered; every read and every
//! delivery is audited.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use futures::Stream;
use hixbus_access::{Action, Caller, Organization};
use hixbus_contracts::PractitionerRef;
use hixbus_service::changes::Shown;
use hixbus_service::{ApiError, JsonPath, JsonQuery, PerKeyLimit, body, text};
use hixbus_storage::AuditLog;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fhir::MAX_IDENTIFIER_CHARS;
use crate::results::{Changes, ReportRow, Results, report_key};
use crate::routes::AppState;
use hixbus_service::ReadModelError;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
/// Live streams one clinic may hold open (a few screens per ward).
pub const STREAMS_PER_CLINIC: usize = 16;
const MAX_ACK_BYTES: usize = 16 * 1024;

/// What the results endpoints need of the gateway.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub results: Results,
    pub changes: Changes,
    pub streams: Arc<PerKeyLimit>,
}

fn failed(e: ReadModelError) -> ApiError {
    tracing::error!(error = %e, "results inbox failed");
    ApiError::unavailable("the results inbox is unavailable; retry")
}

fn audit_failed(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "audit write failed; nothing shown");
    ApiError::unavailable("the results inbox is unavailable; retry")
}

fn not_found(lab: &str, report_id: &str) -> ApiError {
    // Also for another clinic's report: whether it exists is not theirs to know.
    let shown: String = format!("{lab}/{report_id}").chars().take(128).collect();
    ApiError::not_found(format!("no report {shown} in your results"))
}

/// Audits that `org` was shown `rows`, then says what it is shown.
async fn shown(
    audit: &AuditLog,
    org: &Organization,
    action: &str,
    rows: &[ReportRow],
) -> Result<Vec<Value>, ApiError> {
    audit
        .record_all(
            &org.id,
            action,
            rows.iter()
                .map(|r| (r.report_key.as_str(), r.patient_ref.as_str())),
        )
        .await
        .map_err(audit_failed)?;
    Ok(rows.iter().map(ReportRow::item).collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    #[serde(default)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    before: Option<String>,
}

/// A page cursor: `<reported_at ms>/<report key>`.
fn cursor(before: &str) -> Result<(i64, &str), ApiError> {
    text::check_line(before, 2 * MAX_IDENTIFIER_CHARS)
        .map_err(|p| ApiError::bad_request(format!("before {p}")))?;
    before
        .split_once('/')
        .and_then(|(at, key)| Some((at.parse().ok()?, key)))
        .ok_or_else(|| ApiError::bad_request("before must be the next of a previous page"))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    JsonQuery(params): JsonQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewOrderedResults)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let before = params.before.as_deref().map(cursor).transpose()?;
    let inbox = &state.inbox;
    let awaiting = inbox.results.awaiting(&org.id).await.map_err(failed)?;
    let page = inbox
        .results
        .page(&org.id, before, limit)
        .await
        .map_err(failed)?;
    let next = (page.len() == limit as usize)
        .then(|| page.last())
        .flatten()
        .map(|r| format!("{}/{}", r.reported_at, r.report_key));
    Ok(Json(json!({
        "orderer": org.id,
        "awaiting_acknowledgement": shown(&state.audit, org, "results.list", &awaiting).await?,
        "reports": shown(&state.audit, org, "results.list", &page).await?,
        "next": next,
    })))
}

/// One report as it now reads, with every version it had (superseded ones included).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath((lab, report_id)): JsonPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewOrderedResults)?;
    let key = report_key(&lab, &report_id);
    let row = state
        .inbox
        .results
        .get_for(&org.id, &key)
        .await
        .map_err(failed)?
        .ok_or_else(|| not_found(&lab, &report_id))?;
    let versions = state.inbox.results.versions(&key).await.map_err(failed)?;
    let mut item = shown(
        &state.audit,
        org,
        "results.read",
        std::slice::from_ref(&row),
    )
    .await?
    .remove(0);
    item["versions"] = Value::Array(versions);
    Ok(Json(item))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeRequest {
    /// The version the clinician saw: a newer one (a correction) must be seen first.
    event_id: String,
    acknowledged_by: PractitionerRef,
}

/// Records that a clinician of the ordering clinic took note of a report's critical results.
/// Acknowledging again what is acknowledged answers the acknowledgement on record.
pub async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath((lab, report_id)): JsonPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let org = caller.require(Action::ViewOrderedResults)?;
    let request: AcknowledgeRequest = body::json(&headers, body, MAX_ACK_BYTES).await?;
    let by = &request.acknowledged_by;
    for (field, value) in [
        ("event_id", Some(&request.event_id)),
        ("acknowledged_by.id", Some(&by.id)),
        ("acknowledged_by.name", by.name.as_ref()),
        ("acknowledged_by.department", by.department.as_ref()),
    ] {
        if let Some(value) = value {
            text::check_line(value, MAX_IDENTIFIER_CHARS)
                .map_err(|p| ApiError::invalid(format!("{field} {p}")))?;
        }
    }
    if by.id.trim().is_empty() {
        return Err(ApiError::invalid("acknowledged_by.id is required"));
    }
    let key = report_key(&lab, &report_id);
    let results = &state.inbox.results;
    let row = results
        .get_for(&org.id, &key)
        .await
        .map_err(failed)?
        .ok_or_else(|| not_found(&lab, &report_id))?;
    if row.critical.is_none() {
        return Err(ApiError::conflict(
            "not_critical",
            format!("report {key} has no critical result to acknowledge"),
        ));
    }
    if row.report.envelope.event_id != request.event_id {
        return Err(ApiError::conflict(
            "newer_version",
            format!(
                "report {key} was reported again ({}); read it and acknowledge that version",
                row.report.envelope.event_id
            ),
        ));
    }
    let acknowledgement = json!({
        "by": request.acknowledged_by,
        "org_id": org.id,
        "at": chrono::Utc::now().to_rfc3339(),
        "event_id": request.event_id,
    });
    let recorded = results
        .acknowledge(&key, &request.event_id, &acknowledgement)
        .await
        .map_err(failed)?;
    state
        .audit
        .record(&org.id, "results.acknowledge", &key, &row.patient_ref)
        .await
        .map_err(audit_failed)?;
    if recorded {
        state.inbox.changes.announce(&key).await;
    }
    let row = results
        .get_for(&org.id, &key)
        .await
        .map_err(failed)?
        .ok_or_else(|| not_found(&lab, &report_id))?;
    if row.report.envelope.event_id != request.event_id {
        // A correction arrived between the check and the update: nothing was recorded.
        return Err(ApiError::conflict(
            "newer_version",
            format!("report {key} was reported again; read it and acknowledge that version"),
        ));
    }
    Ok(Json(row.item()))
}

/// The live stream of the clinic's results (server-sent events): `critical` for a report with
/// critical results awaiting acknowledgement, `result` for any other new or changed report,
/// `resync` when the screen must reload the list.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let org = caller.require(Action::ViewOrderedResults)?.clone();
    let inbox = &state.inbox;
    let Some(permit) = inbox.streams.try_acquire(&org.id) else {
        return Err(ApiError::too_many(
            "too_many_streams",
            format!(
                "at most {STREAMS_PER_CLINIC} live streams at once per clinic; close one first"
            ),
            std::time::Duration::from_secs(5),
        ));
    };
    Ok(inbox.changes.screen(
        state.audit.clone(),
        org,
        "results.stream",
        permit,
        |org, row| {
            (row.ordering_org == org.id).then(|| Shown {
                event: if row.awaits_acknowledgement() {
                    "critical"
                } else {
                    "result"
                },
                data: row.item().to_string(),
                subject_id: row.report_key.clone(),
                patient_ref: row.patient_ref.clone(),
            })
        },
    ))
}
