//! Proxy access: a patient lets another person — a parent for a child, a guardian, a carer — read
//! their record and manage their consents, until a date or until the patient revokes it. The
//! patient invites with a one-time code; the proxy, signed in with their own provider account,
//! accepts it, then names the patient in the `hixbus-act-for` header of each request. Only the
//! patient manages their proxies. Every proxy read is audited as `proxy:<sub>:<delegation>`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hixbus_service::{ApiError, JsonPath};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::record::local_time;
use crate::routes::{
    AppState, CODE_VALID_DAYS, code_digest, json_body, new_code, shown_code, unavailable,
};
use crate::signin::{Patient, SignedIn};
use crate::store::{Delegation, NewDelegation};

/// The relationships a proxy may have.
const RELATIONSHIPS: &[&str] = &["parent", "guardian", "carer", "family"];
/// The longest a delegation may last (a child's until adulthood is renewed, not open-ended).
pub const MAX_DAYS: i64 = 3650;
/// The most delegations one patient may make (invitations included).
pub const MAX_DELEGATIONS: usize = 50;

fn view(d: &Delegation, now_ms: i64) -> Value {
    json!({
        "id": d.id,
        "relationship": d.relationship,
        "status": d.status(now_ms),
        "proxy": d.proxy.as_ref().map(|(iss, sub)| json!({"issuer": iss, "subject": sub})),
        "created_at": local_time(d.created_at),
        "accepted_at": d.accepted_at.map(local_time),
        "until": local_time(d.until_ms),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    pub relationship: String,
    /// How long the proxy may act (1 to [`MAX_DAYS`]).
    pub days: i64,
}

/// `POST /patient/delegations`: an invitation code for the person who will act for the patient.
pub async fn invite(
    State(state): State<AppState>,
    patient: Patient,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    patient.require_self()?;
    let invite: Invite = json_body(&headers, body).await?;
    if !RELATIONSHIPS.contains(&invite.relationship.as_str()) {
        return Err(ApiError::invalid(format!(
            "relationship must be one of {}",
            RELATIONSHIPS.join(", ")
        )));
    }
    if !(1..=MAX_DAYS).contains(&invite.days) {
        return Err(ApiError::invalid(format!("days must be 1 to {MAX_DAYS}")));
    }
    let existing = state
        .store
        .delegations(&patient.patient_ref)
        .await
        .map_err(unavailable)?;
    if existing.len() >= MAX_DELEGATIONS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_DELEGATIONS} delegations; revoke ones no longer needed"
        )));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let id = uuid::Uuid::now_v7().to_string();
    let code = new_code();
    let delegation = NewDelegation {
        id: &id,
        patient_ref: &patient.patient_ref,
        relationship: &invite.relationship,
        code_sha256: &code_digest(&code),
        code_expires_at: now + CODE_VALID_DAYS * 86_400_000,
        created_at: now,
        until_ms: now + invite.days * 86_400_000,
    };
    state
        .store
        .create_delegation(&delegation)
        .await
        .map_err(unavailable)?;
    state
        .audited(&patient, "patient.delegation.invite", &id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "code": shown_code(&code),
            "code_expires_at": local_time(delegation.code_expires_at),
            "until": local_time(delegation.until_ms),
        })),
    )
        .into_response())
}

/// `GET /patient/delegations`: the patient's proxies and invitations.
pub async fn list(State(state): State<AppState>, patient: Patient) -> Result<Response, ApiError> {
    patient.require_self()?;
    state.audited(&patient, "patient.delegations", "").await?;
    let now = chrono::Utc::now().timestamp_millis();
    let all = state
        .store
        .delegations(&patient.patient_ref)
        .await
        .map_err(unavailable)?;
    Ok(
        Json(json!({"delegations": all.iter().map(|d| view(d, now)).collect::<Vec<_>>()}))
            .into_response(),
    )
}

/// `DELETE /patient/delegations/{id}`: the proxy can no longer act, from this request on.
pub async fn revoke(
    State(state): State<AppState>,
    patient: Patient,
    JsonPath(id): JsonPath<String>,
) -> Result<Response, ApiError> {
    patient.require_self()?;
    hixbus_service::check_id(&id)?;
    let now = chrono::Utc::now().timestamp_millis();
    if !state
        .store
        .revoke_delegation(&id, &patient.patient_ref, now)
        .await
        .map_err(unavailable)?
    {
        return Err(ApiError::not_found("no such delegation of yours in force"));
    }
    state
        .audited(&patient, "patient.delegation.revoke", &id)
        .await?;
    Ok(Json(json!({"id": id, "status": "revoked"})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    pub code: String,
}

/// `POST /patient/delegations/accept`: the invited person, signed in, takes up the delegation.
pub async fn accept(
    State(state): State<AppState>,
    SignedIn(person): SignedIn,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let accept: Accept = json_body(&headers, body).await?;
    if accept.code.len() > 64 {
        return Err(ApiError::invalid("that is not an invitation code"));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let Some(d) = state
        .store
        .accept_delegation(&code_digest(&accept.code), &person.iss, &person.sub, now)
        .await
        .map_err(unavailable)?
    else {
        return Err(ApiError::invalid(
            "that code is unknown, used, revoked or expired (and a patient cannot be their own proxy)",
        ));
    };
    state
        .audit
        .record(
            &format!("proxy:{}:{}", person.sub, d.id),
            "patient.delegation.accept",
            &d.id,
            &d.patient_ref,
        )
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "act_for": d.patient_ref,
        "relationship": d.relationship,
        "until": local_time(d.until_ms),
    }))
    .into_response())
}

/// `GET /patient/acting-for`: whom the signed-in person may act for now.
pub async fn acting_for(
    State(state): State<AppState>,
    SignedIn(person): SignedIn,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now().timestamp_millis();
    let held = state
        .store
        .held_by(&person.iss, &person.sub)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "patients": held.iter().filter(|d| d.active(now)).map(|d| json!({
            "act_for": d.patient_ref,
            "relationship": d.relationship,
            "until": local_time(d.until_ms),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}
