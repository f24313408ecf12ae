//! The patient's consent API and their access list. A decision is published as
//! `ConsentChanged` on `consents` (every consent-enforcing service reads it there) and applied to
//! this service's table at once, so the summary on every replica obeys it before the answer
//! returns; the consumer applies the same event again, to the same row.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hixbus_contracts::{
    ConsentChanged, ConsentDecision, DataCategory, Envelope, PatientDataAccessed, PurposeOfUse,
    Timestamp,
};
use hixbus_service::{ApiError, JsonPath};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::consent::{self, POLICY_VERSION, VISIT_HOURS};
use crate::record::local_time;
use crate::routes::{AppState, json_body, unavailable};
use crate::signin::Patient;
use crate::trail;

/// How a patient's consent events name their producer.
pub const PORTAL: &str = "patient-portal";
/// The most consents one patient may hold (revoked ones included): a consent per institution
/// they were ever treated at is a few dozen.
pub const MAX_CONSENTS: usize = 500;

fn view(c: &ConsentChanged, now_ms: i64) -> Value {
    json!({
        "consent_id": c.consent_id,
        "grantee_org": c.grantee_org,
        "purpose": c.purpose,
        "scope": c.scope,
        "decision": c.decision,
        "kind": if c.valid_until.is_some() { "visit" } else { "standing" },
        "valid_until": c.valid_until.map(|t| local_time(t.unix_millis())),
        "decided_at": local_time(c.envelope.occurred_at.unix_millis()),
        "in_force": consent::in_force(c, now_ms),
    })
}

/// Publishes the decision, then applies it here.
async fn decide(state: &AppState, c: &ConsentChanged) -> Result<(), ApiError> {
    state.publisher.publish(c).await.map_err(|e| {
        tracing::error!(error = %e, "a consent decision was not published");
        ApiError::unavailable("the decision could not be recorded; nothing changed, try again")
    })?;
    state.store.book.put(c).await.map_err(unavailable)
}

fn event(patient: &Patient, consent_id: String) -> ConsentChanged {
    ConsentChanged {
        envelope: Envelope::new(PORTAL, &patient.patient_ref),
        consent_id,
        grantee_org: None,
        purpose: PurposeOfUse::Treatment,
        scope: vec![DataCategory::All],
        decision: ConsentDecision::Granted,
        valid_until: None,
    }
}

/// `GET /patient/consents`: every decision as it stands, the research choice, and where the law
/// decides instead.
pub async fn list(State(state): State<AppState>, patient: Patient) -> Result<Response, ApiError> {
    state.audited(&patient, "patient.consents", "").await?;
    let refs = state.refs(&patient).await?;
    let consents = state.consents(&refs).await?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Json(json!({
        "policy_version": POLICY_VERSION,
        "consents": consents
            .iter()
            .filter(|c| c.purpose != PurposeOfUse::Research)
            .map(|c| view(c, now))
            .collect::<Vec<_>>(),
        "research": {"opted_out": consent::research_opted_out(&consents)},
        "notes": consent::legal_notes(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The institution that may see other institutions' data.
    pub grantee_org: String,
    /// `ALL`, `PRESCRIPTIONS`, `DISPENSATIONS`, `LAB_RESULTS`…
    pub scope: Vec<DataCategory>,
    /// `visit` (24 hours, as consent at a visit is in Japan) or `standing` (until revoked).
    pub kind: String,
}

/// `POST /patient/consents`: let one institution see what others hold, for its purpose.
pub async fn grant(
    State(state): State<AppState>,
    patient: Patient,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant: Grant = json_body(&headers, body).await?;
    let grantee = state.directory.get(&grant.grantee_org).ok_or_else(|| {
        ApiError::invalid(format!(
            "{:?} is not an institution on the exchange",
            grant.grantee_org
        ))
    })?;
    let purpose = consent::purpose_of(grantee.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "{} is a {}: only clinics, hospitals and pharmacies treat or dispense",
            grantee.id,
            grantee.role.as_str()
        ))
    })?;
    if grant.scope.is_empty() || grant.scope.len() > 6 {
        return Err(ApiError::invalid("scope names 1 to 6 categories"));
    }
    let valid_until = match grant.kind.as_str() {
        "visit" => Some(Timestamp::from(
            chrono::Utc::now() + chrono::Duration::hours(VISIT_HOURS),
        )),
        "standing" => None,
        other => {
            return Err(ApiError::invalid(format!(
                "kind {other:?}: use visit (24 hours) or standing (until revoked)"
            )));
        }
    };
    let refs = state.refs(&patient).await?;
    if state.consents(&refs).await?.len() >= MAX_CONSENTS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_CONSENTS} consents; revoke one you no longer need"
        )));
    }
    let mut c = event(&patient, uuid::Uuid::now_v7().to_string());
    c.grantee_org = Some(grantee.id.clone());
    c.purpose = purpose;
    c.scope = grant.scope;
    c.valid_until = valid_until;
    decide(&state, &c).await?;
    state
        .audited(&patient, "patient.consent.grant", &c.consent_id)
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok((StatusCode::CREATED, Json(view(&c, now))).into_response())
}

/// `DELETE /patient/consents/{consent_id}`: takes effect before the answer, on every replica.
pub async fn revoke(
    State(state): State<AppState>,
    patient: Patient,
    JsonPath(consent_id): JsonPath<String>,
) -> Result<Response, ApiError> {
    hixbus_service::check_id(&consent_id)?;
    let refs = state.refs(&patient).await?;
    let consents = state.consents(&refs).await?;
    // Another patient's consent id is as unknown as a made-up one.
    let Some(existing) = consents
        .into_iter()
        .find(|c| c.consent_id == consent_id && c.purpose != PurposeOfUse::Research)
    else {
        return Err(ApiError::not_found("no such consent of yours"));
    };
    let mut c = existing;
    c.envelope = Envelope::new(PORTAL, &patient.patient_ref);
    c.decision = ConsentDecision::Revoked;
    decide(&state, &c).await?;
    state
        .audited(&patient, "patient.consent.revoke", &c.consent_id)
        .await?;
    Ok(Json(view(&c, chrono::Utc::now().timestamp_millis())).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchChoice {
    pub opted_out: bool,
}

/// `PUT /patient/research`: opt out of (or back into) research use of de-identified data.
pub async fn research(
    State(state): State<AppState>,
    patient: Patient,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let choice: ResearchChoice = json_body(&headers, body).await?;
    // One consent id per patient for research, so the latest choice replaces the one before.
    let id = format!(
        "research:{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, patient.patient_ref.as_bytes())
    );
    let mut c = event(&patient, id);
    c.purpose = PurposeOfUse::Research;
    c.decision = if choice.opted_out {
        ConsentDecision::Revoked
    } else {
        ConsentDecision::Granted
    };
    decide(&state, &c).await?;
    state
        .audited(
            &patient,
            "patient.research",
            if choice.opted_out {
                "opt-out"
            } else {
                "opt-in"
            },
        )
        .await?;
    Ok(Json(json!({"opted_out": choice.opted_out})).into_response())
}

/// `GET /patient/access`: who read, was sent or changed this patient's data, in every service
/// of the exchange (the trail), emergency accesses first, then every entry, newest first.
pub async fn access(State(state): State<AppState>, patient: Patient) -> Result<Response, ApiError> {
    state.audited(&patient, "patient.access", "").await?;
    let refs = state.refs(&patient).await?;
    let breaks = state.store.break_glass(&refs).await.map_err(unavailable)?;
    let trail = trail::for_patient(state.store.database(), &refs)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "break_glass": breaks.iter().map(|(id, org, reason, from, until)| json!({
            "id": id,
            "org": org,
            "institution": state.directory.get(org).map(|o| o.name.clone()),
            "reason": reason,
            "from": local_time(*from),
            "until": local_time(*until),
        })).collect::<Vec<_>>(),
        "entries": trail.iter().map(|(_, _, _, e)| entry_view(&state, e)).collect::<Vec<_>>(),
    }))
    .into_response())
}

fn entry_view(state: &AppState, e: &PatientDataAccessed) -> Value {
    json!({
        "at": local_time(e.envelope.occurred_at.unix_millis()),
        "who": e.actor,
        "institution": state.directory.get(&e.actor).map(|o| o.name.clone()),
        "role": e.actor_role,
        "action": e.action,
        "what": e.subject,
        "purpose": e.purpose,
        "policy": e.policy,
        "service": e.envelope.producer_org,
        "event_id": e.envelope.event_id,
    })
}

/// `GET /patient/access/download`: the whole trail as JSON lines, each entry with its place in
/// its chain and its hash, so the patient can keep it and check it later.
pub async fn download(
    State(state): State<AppState>,
    patient: Patient,
) -> Result<Response, ApiError> {
    state
        .audited(&patient, "patient.access_download", "")
        .await?;
    let refs = state.refs(&patient).await?;
    let trail = trail::for_patient(state.store.database(), &refs)
        .await
        .map_err(unavailable)?;
    let mut lines = String::new();
    for (chain, seq, hash, e) in &trail {
        let mut line = entry_view(&state, e);
        line["chain"] = json!(chain);
        line["seq"] = json!(seq);
        line["hash"] = json!(hash);
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-ndjson"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"access-trail.jsonl\"",
            ),
        ],
        lines,
    )
        .into_response())
}
