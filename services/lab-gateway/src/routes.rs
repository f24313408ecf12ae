//! `POST /hl7v2`: one HL7 v2 message per request, answered with its ACK.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller, Directory, Organization, Role};
use hixbus_bus::Publisher;
use hixbus_contracts::{Envelope, InstitutionRef, LabResultReported, Specimen, Timestamp};
use hixbus_service::{ApiError, body};
use hixbus_storage::AuditLog;

use crate::ack::{self, AckCode};
use crate::charset::Charset;
use crate::hl7::{self, Header, LabReport, Problem, Refusal};

/// The largest message taken: a report of hundreds of results is tens of kilobytes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Event ids of lab reports: the same message (sender, MSH-10) always gets the same id, so a
/// message sent again after a lost ACK is recognized downstream as the same report.
const REPORT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6869_7862_7573_2d6c_6162_2d72_6570_6f72);

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub publisher: Publisher,
    pub audit: AuditLog,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

/// What became of one message: its ACK (in the sender's character set) and how HTTP says it.
#[derive(Debug)]
pub struct Answer {
    pub code: AckCode,
    pub ack: Vec<u8>,
    pub status: StatusCode,
    /// The event published, for `AA`.
    pub event_id: Option<String>,
}

fn now_in_japan() -> chrono::DateTime<chrono::FixedOffset> {
    let japan = chrono::FixedOffset::east_opt(9 * 3600).expect("a valid offset");
    chrono::Utc::now().with_timezone(&japan)
}

pub(crate) fn refused(header: &Header, charset: Charset, problem: &Problem) -> Answer {
    let code = AckCode::from(problem.refusal);
    let text = ack::ack(header, code, Some(problem), &problem.reason, now_in_japan());
    Answer {
        code,
        ack: ack::encode(&text, charset),
        status: match problem.refusal {
            Refusal::Reject => StatusCode::BAD_REQUEST,
            Refusal::Error if problem.code == 207 => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Error => StatusCode::UNPROCESSABLE_ENTITY,
        },
        event_id: None,
    }
}

/// Reads, publishes and answers one message from `org` (the same for every transport).
pub async fn receive(state: &AppState, org: &Organization, bytes: &[u8]) -> Answer {
    let read = match hl7::read(bytes) {
        Ok(read) => read,
        Err(problem) => return refused(&Header::default(), Charset::Ascii, &problem),
    };
    let report = match read.report {
        Ok(report) => report,
        Err(problem) => {
            tracing::info!(org = %org.id, control_id = %read.header.control_id, reason = %problem.reason, "lab message refused");
            return refused(&read.header, read.charset, &problem);
        }
    };
    let event = lab_result_reported(&state.directory, org, &read.header, report);
    if let Err(e) = state.publisher.publish(&event).await {
        tracing::warn!(error = %e, org = %org.id, "lab report not published");
        let problem = Problem {
            refusal: Refusal::Error,
            code: 207,
            segment: "MSH".to_owned(),
            sequence: 1,
            field: 0,
            reason: "the report was not published; send the same message again".to_owned(),
        };
        return refused(&read.header, read.charset, &problem);
    }
    if let Err(e) = state
        .audit
        .record(
            &org.id,
            "lab.report",
            &event.report_id,
            &event.envelope.patient_ref,
        )
        .await
    {
        // Published: losing the audit line must not make the lab send it again.
        tracing::error!(error = %e, report_id = %event.report_id, "audit write failed");
    }
    tracing::info!(org = %org.id, report_id = %event.report_id, results = event.results.len(), "lab report published");
    let text = ack::ack(
        &read.header,
        AckCode::Accept,
        None,
        &format!("published as {}", event.envelope.event_id),
        now_in_japan(),
    );
    Answer {
        code: AckCode::Accept,
        ack: ack::encode(&text, read.charset),
        status: StatusCode::OK,
        event_id: Some(event.envelope.event_id),
    }
}

/// The ordering institution named by MSH-6 (receiving facility), by organization id or
/// institution code; `None` when it is not on the exchange.
fn ordering(directory: &Directory, header: &Header) -> Option<InstitutionRef> {
    let named = header
        .receiving_facility
        .split('^')
        .next()
        .unwrap_or("")
        .trim();
    if named.is_empty() {
        return None;
    }
    let org = directory.get(named).cloned().or_else(|| {
        directory
            .organizations()
            .find(|o| o.institution_code.as_deref() == Some(named))
            .cloned()
    })?;
    matches!(org.role, Role::Clinic | Role::Hospital).then(|| InstitutionRef {
        org_id: org.id.clone(),
        institution_code: org.institution_code.clone(),
        name: Some(org.name.clone()),
    })
}

fn lab_result_reported(
    directory: &Directory,
    org: &Organization,
    header: &Header,
    report: LabReport,
) -> LabResultReported {
    let event_id = uuid::Uuid::new_v5(
        &REPORT_NAMESPACE,
        format!("{}/{}", org.id, header.control_id).as_bytes(),
    )
    .to_string();
    LabResultReported {
        envelope: Envelope {
            event_id,
            occurred_at: Timestamp::now(),
            producer_org: org.id.clone(),
            // Until the identity service links it: the lab's own id of the patient.
            patient_ref: format!("local:{}:{}", org.id, report.patient_local_id),
            correlation_id: Some(report.order_id.clone()),
            causation_id: None,
        },
        report_id: report.report_id,
        order_id: report.order_id,
        ordering: ordering(directory, header),
        performing_lab: InstitutionRef {
            org_id: org.id.clone(),
            institution_code: org.institution_code.clone(),
            name: Some(org.name.clone()),
        },
        status: report.status,
        specimen: Specimen {
            specimen_id: report.specimen_id,
            specimen_type: report.specimen_type,
            collected_at: report.collected_at,
        },
        results: report.results,
    }
}

/// HL7 v2 over HTTP: the body is one message (ER7), `Content-Type: application/hl7-v2`.
pub async fn post_hl7v2(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let org = caller.require(Action::ReportLabResults)?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !matches!(
        media,
        Some("application/hl7-v2" | "x-application/hl7-v2+er7")
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/hl7-v2",
        ));
    }
    let bytes = body::read(body, MAX_MESSAGE_BYTES)
        .await
        .map_err(|e| ApiError::new(e.status(), "bad_request", e.to_string()))?;
    let answer = receive(&state, org, &bytes).await;
    Ok((
        answer.status,
        [(header::CONTENT_TYPE, "application/hl7-v2")],
        answer.ack,
    )
        .into_response())
}
