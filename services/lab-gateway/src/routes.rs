//! `POST /hl7v2`: one HL7 v2 message per request, answered with its ACK.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller, Directory, Organization, Role};
use hixbus_bus::Publisher;
use hixbus_contracts::{
    CheckupCompleted, Envelope, InstitutionRef, LabResultReported, LinkSource, Specimen, Timestamp,
};
use hixbus_contracts::{identity, lifecycle};
use hixbus_service::fhir::{self, FhirError, Outcome};
use hixbus_service::identity::link_patient;
use hixbus_service::{ApiError, JsonPath, body, check_id, institution};
use hixbus_storage::AuditLog;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ack::{self, AckCode};
use crate::charset::Charset;
use crate::checkup;
use crate::hl7::{self, Header, LabReport, PatientId, Problem, Refusal};
use hixbus_storage::{Linked, Links};

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
    pub links: Links,
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

pub(crate) fn refused(header: &Header, charset: Charset, problem: &Problem) -> Answer {
    let code = AckCode::from(problem.refusal);
    let text = ack::ack(
        header,
        code,
        Some(problem),
        &problem.reason,
        lifecycle::now_in_japan(),
    );
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
    let msh6 = read
        .header
        .receiving_facility
        .split('^')
        .next()
        .unwrap_or("");
    let patient_ref = patient_ref(state, org, &report.patient).await;
    let event = lab_result_reported(
        &state.directory,
        org,
        &read.header.control_id,
        &[msh6],
        patient_ref,
        report,
    );
    if publish(state, org, &event).await.is_err() {
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
    let text = ack::ack(
        &read.header,
        AckCode::Accept,
        None,
        &match &event.ordering {
            Some(_) => format!("published as {}", event.envelope.event_id),
            // Accepted (the patient's record takes it), but the lab should know.
            None => format!(
                "published as {}; MSH-6 and ORC-21 name no clinic or hospital on the exchange, so no ordering clinic receives it",
                event.envelope.event_id
            ),
        },
        lifecycle::now_in_japan(),
    );
    Answer {
        code: AckCode::Accept,
        ack: ack::encode(&text, read.charset),
        status: StatusCode::OK,
        event_id: Some(event.envelope.event_id),
    }
}

/// Publishes one report and audits it; `Err` when the broker did not take it (the sender must
/// send it again).
async fn publish(
    state: &AppState,
    org: &Organization,
    event: &LabResultReported,
) -> Result<(), ()> {
    if let Err(e) = state.publisher.publish(event).await {
        tracing::warn!(error = %e, org = %org.id, "lab report not published");
        return Err(());
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
    Ok(())
}

/// The patient's reference: the cross-institution one when the message names the patient by
/// insurance or the sender registered its local id (the identity rule); else the sender's own.
/// When the links cannot be read, the sender's own: the result goes through, and the link
/// already published tells every view it is the same patient.
async fn patient_ref(state: &AppState, org: &Organization, patient: &PatientId) -> String {
    match patient {
        PatientId::Insured(reference) => reference.clone(),
        PatientId::Local(id) => match state.links.lookup(&org.id, id).await {
            Ok(Some(linked)) => linked,
            Ok(None) => identity::local_ref(&org.id, id),
            Err(e) => {
                tracing::warn!(error = %e, org = %org.id, "patient links unreadable; the local reference is used");
                identity::local_ref(&org.id, id)
            }
        },
    }
}

/// The ordering institution: the first of `named` (HL7: MSH-6.1, the receiving facility), then
/// the report's ordering facility (HL7 ORC-21; FHIR: the ServiceRequest's requester, JP-CLINS'
/// institution number) that is an organization on the exchange (by id or institution code) with
/// the role clinic or hospital. When none is and the sender is a hospital, its own laboratory
/// reported its own orders. `None` otherwise.
fn ordering(
    directory: &Directory,
    sender: &Organization,
    named: &[&str],
    report: &LabReport,
) -> Option<InstitutionRef> {
    let org = named
        .iter()
        .copied()
        .chain(report.ordering_facility.as_deref())
        .map(str::trim)
        .filter(|named| !named.is_empty())
        .filter_map(|named| {
            directory
                .get(named)
                .or_else(|| directory.with_institution_code(named).next())
        })
        .map(|org| &**org)
        .find(|org| matches!(org.role, Role::Clinic | Role::Hospital))
        .or((sender.role == Role::Hospital).then_some(sender))?;
    Some(institution(org))
}

/// The event for `report` from `org`; `message_id` names the message (HL7 MSH-10, FHIR the
/// digest of the request) so that the same message sent again is the same event.
fn lab_result_reported(
    directory: &Directory,
    org: &Organization,
    message_id: &str,
    named: &[&str],
    patient_ref: String,
    report: LabReport,
) -> LabResultReported {
    let ordering = ordering(directory, org, named, &report);
    let event_id = uuid::Uuid::new_v5(
        &REPORT_NAMESPACE,
        format!("{}/{message_id}", org.id).as_bytes(),
    )
    .to_string();
    LabResultReported {
        envelope: Envelope {
            event_id,
            occurred_at: Timestamp::now(),
            producer_org: org.id.clone(),
            // Until the identity service links it: the lab's own id of the patient.
            patient_ref,
            correlation_id: Some(report.order_id.clone()),
            causation_id: None,
        },
        report_id: report.report_id,
        order_id: report.order_id,
        ordering,
        performing_lab: institution(org),
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
    if !matches!(
        hixbus_service::media_type(&headers),
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

/// The largest FHIR request taken: a report's Bundle with its Observations and Specimens.
pub const MAX_FHIR_BYTES: usize = 4 * 1024 * 1024;

/// `POST /fhir/Observation`: one lab result.
pub async fn post_observation(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    receive_fhir(&state, &caller, &headers, body, "Observation").await
}

/// `POST /fhir/DiagnosticReport`: a report with its Observations contained.
pub async fn post_diagnostic_report(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    receive_fhir(&state, &caller, &headers, body, "DiagnosticReport").await
}

/// `POST /fhir/Bundle`: a DiagnosticReport and its Observations, or Observations alone.
pub async fn post_bundle(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    receive_fhir(&state, &caller, &headers, body, "Bundle").await
}

/// A report's rendering (`presentedForm`, a PDF) is not carried on the bus: only its results
/// are. It is dropped before the text checks, which bound what is carried.
fn drop_renderings(resource: &mut Value) {
    if let Some(object) = resource.as_object_mut() {
        object.remove("presentedForm");
    }
    if let Some(entries) = resource.get_mut("entry").and_then(Value::as_array_mut) {
        for entry in entries {
            if let Some(r) = entry.get_mut("resource") {
                drop_renderings(r);
            }
        }
    }
}

async fn receive_fhir(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
    expected: &str,
) -> Result<Response, FhirError> {
    // Who may send anything here is known before the body is read: a Bundle may be a checkup
    // (clinics and hospitals) or a lab report (labs and hospitals), the rest are lab reports.
    if expected == "Bundle" {
        caller
            .require(Action::ReportLabResults)
            .or_else(|_| caller.require(Action::ReportCheckups))?;
    } else {
        caller.require(Action::ReportLabResults)?;
    }
    fhir::require_media_type(headers)?;
    let bytes = body::read(body, MAX_FHIR_BYTES)
        .await
        .map_err(|e| Outcome::one(e.status(), "too-costly", "$", e.to_string()))?;
    let mut json = fhir::parse(&bytes)?;
    let kind = json.get("resourceType").and_then(Value::as_str);
    if kind != Some(expected) {
        let shown: String = kind.unwrap_or("no resourceType").chars().take(64).collect();
        return Err(Outcome::one(
            StatusCode::BAD_REQUEST,
            "structure",
            "resourceType",
            format!("this endpoint takes a {expected}, not {shown}"),
        )
        .into());
    }
    drop_renderings(&mut json);
    let problems = fhir::text_problems(&json);
    if !problems.is_empty() {
        return Err(Outcome::invalid(problems).into());
    }
    // The same request sent again (its answer was lost) is the same event.
    let digest = hex::encode(Sha256::digest(&bytes));
    if expected == "Bundle" && checkup::is_checkup(&json) {
        let org = caller.require(Action::ReportCheckups)?;
        return receive_checkup(state, org, &json, &digest).await;
    }
    let org = caller.require(Action::ReportLabResults)?;
    let report = crate::fhir::read(&json).map_err(Outcome::invalid)?;
    let patient_ref = patient_ref(state, org, &report.patient).await;
    let event = lab_result_reported(
        &state.directory,
        org,
        &format!("fhir:{digest}"),
        &[],
        patient_ref,
        report,
    );
    if publish(state, org, &event).await.is_err() {
        return Err(Outcome::one(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "$",
            "the report was not published; send the same request again",
        )
        .into());
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "event_id": event.envelope.event_id,
            "report_id": event.report_id,
            "order_id": event.order_id,
            "status": event.status,
            "results": event.results.len(),
            "patient_ref": event.envelope.patient_ref,
            "ordering": event.ordering,
            "warning": event.ordering.is_none().then_some(
                "no clinic or hospital on the exchange is named as the orderer (ServiceRequest.requester, JP_eCS_InstitutionNumber), so no ordering clinic receives it"
            ),
        })),
    )
        .into_response())
}

/// Namespace of checkup event ids (see [`receive_checkup`]).
const CHECKUP_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6869_7862_7573_2d63_6865_636b_7570_0001);

/// A 特定健診 document Bundle: published as one `CheckupCompleted` for the patient's insurer.
async fn receive_checkup(
    state: &AppState,
    org: &Organization,
    json: &Value,
    digest: &str,
) -> Result<Response, FhirError> {
    let report = checkup::read(json).map_err(Outcome::invalid)?;
    let insurer_number = report.insurer_number.clone();
    let insurer = state
        .directory
        .with_institution_code(&report.insurer_number)
        .find(|o| o.role == Role::Insurer)
        .map(|o| institution(o));
    let event = CheckupCompleted {
        envelope: Envelope {
            event_id: uuid::Uuid::new_v5(
                &CHECKUP_NAMESPACE,
                format!("{}/{digest}", org.id).as_bytes(),
            )
            .to_string(),
            occurred_at: Timestamp::now(),
            producer_org: org.id.clone(),
            patient_ref: report.patient_ref,
            correlation_id: Some(report.checkup_id.clone()),
            causation_id: None,
        },
        checkup_id: report.checkup_id,
        checkup_type: report.checkup_type,
        performed_by: institution(org),
        performed_on: report.performed_on,
        items: report.items,
        questionnaire: report.questionnaire,
        overall_assessment: report.overall_assessment,
        insurer,
        metabolic_syndrome: report.metabolic_syndrome,
        guidance_level: report.guidance_level,
    };
    if let Err(e) = state.publisher.publish(&event).await {
        tracing::warn!(error = %e, org = %org.id, "checkup not published");
        return Err(Outcome::one(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "$",
            "the checkup was not published; send the same request again",
        )
        .into());
    }
    if let Err(e) = state
        .audit
        .record(
            &org.id,
            "checkup.report",
            &event.checkup_id,
            &event.envelope.patient_ref,
        )
        .await
    {
        tracing::error!(error = %e, checkup_id = %event.checkup_id, "audit write failed");
    }
    tracing::info!(org = %org.id, checkup_id = %event.checkup_id, items = event.items.len(), "checkup published");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "event_id": event.envelope.event_id,
            "checkup_id": event.checkup_id,
            "checkup_type": event.checkup_type,
            "items": event.items.len(),
            "questionnaire": event.questionnaire.len(),
            "patient_ref": event.envelope.patient_ref,
            "insurer": event.insurer,
            "warning": event.insurer.is_none().then(|| format!(
                "insurer {insurer_number} is not on the exchange: no insurer receives this checkup"
            )),
        })),
    )
        .into_response())
}

/// `PUT /fhir/Patient/{id}`: the caller's own patient `id`, with the patient's insurance (the
/// identity rule: docs/labs.md). Publishes `PatientLinked` when the link is new or changed.
pub async fn put_patient(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(local_id): JsonPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    let org = caller.require(Action::RegisterPatients)?;
    check_id(&local_id)
        .map_err(|e| Outcome::one(StatusCode::BAD_REQUEST, "value", "id", e.to_string()))?;
    fhir::require_media_type(&headers)?;
    let bytes = body::read(body, MAX_PATIENT_BYTES)
        .await
        .map_err(|e| Outcome::one(e.status(), "too-costly", "$", e.to_string()))?;
    let json = fhir::parse(&bytes)?;
    let problems = fhir::text_problems(&json);
    if !problems.is_empty() {
        return Err(Outcome::invalid(problems).into());
    }
    let patient_ref =
        crate::identity::registered_ref(&json, &local_id).map_err(Outcome::invalid)?;
    let local_ref = identity::local_ref(&org.id, &local_id);
    let linked = link_patient(
        &state.publisher,
        &state.links,
        &org.id,
        &local_id,
        &patient_ref,
        LinkSource::Registered,
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, org = %org.id, "patient link not made");
        Outcome::one(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "$",
            format!("{e}; send the same request again"),
        )
    })?;
    if let Err(e) = state
        .audit
        .record(&org.id, "patient.link", &local_ref, &patient_ref)
        .await
    {
        tracing::error!(error = %e, "audit write failed");
    }
    let status = match linked {
        Linked::New => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((
        status,
        axum::Json(json!({
            "local_ref": local_ref,
            "patient_ref": patient_ref,
            "changed": linked != Linked::Unchanged,
            "previous_ref": match linked {
                Linked::Changed { previous } => Some(previous),
                _ => None,
            },
        })),
    )
        .into_response())
}

/// A registered Patient is small: an identifier or a contained Coverage and its payor.
const MAX_PATIENT_BYTES: usize = 64 * 1024;
