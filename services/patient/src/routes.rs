//! The patient's API. Every route under `/patient/` reads the record of the signed-in,
//! enrolled patient only: no path or query names a patient, so no request can reach another
//! one's. Every read is audited under the patient's own sign-in.
//!
//! Enrolment: an institution that checked the patient's insurance card asks for a one-time code
//! (`POST /patient/enrolment-codes`, with its API key) and hands it to the patient, who redeems
//! it once signed in (`POST /patient/enrol`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller, Directory};
use hixbus_bus::Publisher;
use hixbus_contracts::identity;
use hixbus_contracts::lifecycle;
use hixbus_contracts::time::Date;
use hixbus_service::{ApiError, JsonQuery, body};
use hixbus_storage::AuditLog;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::export;
use crate::projector::date_ms;
use crate::record;
use crate::signin::{Patient, SignIn, SignedIn};
use crate::store::{Enrolled, Filter, Store};

/// Enrolment requests are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
/// How long an enrolment code can be redeemed.
pub const CODE_VALID_DAYS: i64 = 14;
/// Codes are read aloud and typed: no 0/O, 1/I/L.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// 12 characters of 31: about 59 bits, and redeeming one needs a valid sign-in as well.
const CODE_CHARS: usize = 12;

#[derive(Debug, Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub signin: SignIn,
    pub store: Store,
    pub audit: AuditLog,
    /// Publishes the patients' consent decisions.
    pub publisher: Publisher,
}

impl FromRef<AppState> for Arc<Directory> {
    fn from_ref(state: &AppState) -> Self {
        state.directory.clone()
    }
}

impl FromRef<AppState> for SignIn {
    fn from_ref(state: &AppState) -> Self {
        state.signin.clone()
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "patient record store failed");
    ApiError::unavailable("the patient record is unavailable; try again")
}

impl AppState {
    /// Records that `patient` read `what` (and what of it), before the answer leaves: a read
    /// that cannot be audited is not answered.
    pub(crate) async fn audited(
        &self,
        patient: &Patient,
        action: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        self.audit
            .record(&patient.audit_name(), action, what, &patient.patient_ref)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn refs(&self, patient: &Patient) -> Result<Vec<String>, ApiError> {
        self.store
            .refs(&patient.patient_ref)
            .await
            .map_err(unavailable)
    }

    /// Every consent decision about the patient under `refs`, as it stands.
    pub(crate) async fn consents(
        &self,
        refs: &[String],
    ) -> Result<Vec<hixbus_contracts::ConsentChanged>, ApiError> {
        self.store.book.consents(refs).await.map_err(unavailable)
    }

    async fn whole_record(&self, patient: &Patient) -> Result<Vec<crate::store::Entry>, ApiError> {
        let refs = self.refs(patient).await?;
        self.store.record(&refs).await.map_err(unavailable)
    }
}

/// The insurance card an institution read, as printed on it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Insurance {
    /// 保険者番号
    pub insurer: String,
    /// 記号
    #[serde(default)]
    pub symbol: String,
    /// 番号
    pub number: String,
    /// 枝番
    #[serde(default)]
    pub branch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub insurance: Insurance,
}

/// A JSON request body of at most [`MAX_BODY_BYTES`].
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    body::json(headers, body, MAX_BODY_BYTES).await
}

fn check_card_field(name: &str, value: &str, required: bool) -> Result<(), ApiError> {
    let normalized = identity::normalized(value);
    if required && normalized.is_empty() {
        return Err(ApiError::invalid(format!("insurance.{name} is empty")));
    }
    if normalized.chars().count() > 32 || normalized.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "insurance.{name} is not as printed on a card (at most 32 characters)"
        )));
    }
    Ok(())
}

pub(crate) fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_CHARS)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// A code as handed over: three groups of four.
pub(crate) fn shown_code(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed (any case, with or without dashes and spaces), as stored.
pub(crate) fn code_digest(code: &str) -> String {
    let plain: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_uppercase)
        .collect();
    hex::encode(Sha256::digest(plain.as_bytes()))
}

/// `POST /patient/enrolment-codes`: a clinic, hospital or pharmacy that checked the patient's
/// insurance card gets a one-time code to hand them.
pub async fn issue_code(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let org = caller.require(Action::EnrolPatients)?;
    let request: CodeRequest = json_body(&headers, body).await?;
    let card = &request.insurance;
    check_card_field("insurer", &card.insurer, true)?;
    check_card_field("symbol", &card.symbol, false)?;
    check_card_field("number", &card.number, true)?;
    check_card_field("branch", &card.branch, false)?;
    let patient_ref =
        identity::insured_ref(&card.insurer, &card.symbol, &card.number, &card.branch);
    let code = new_code();
    let expires = chrono::Utc::now() + chrono::Duration::days(CODE_VALID_DAYS);
    state
        .store
        .issue_code(
            &code_digest(&code),
            &patient_ref,
            &org.id,
            expires.timestamp_millis(),
        )
        .await
        .map_err(unavailable)?;
    state
        .audit
        .record(&org.id, "patient.enrolment_code", "", &patient_ref)
        .await
        .map_err(unavailable)?;
    let shown = shown_code(&code);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "code": shown,
            "patient_ref": patient_ref,
            "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub code: String,
}

/// `POST /patient/enrol`: the signed-in person redeems their code and from then on reads that
/// patient's record.
pub async fn enrol(
    State(state): State<AppState>,
    SignedIn(person): SignedIn,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: EnrolRequest = json_body(&headers, body).await?;
    if request.code.len() > 64 {
        return Err(ApiError::invalid("that is not an enrolment code"));
    }
    let outcome = state
        .store
        .enrol(
            &person.iss,
            &person.sub,
            Some(&code_digest(&request.code)),
            None,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .map_err(unavailable)?;
    match outcome {
        Enrolled::Now(patient_ref) => {
            state
                .audit
                .record(
                    &person.audit_name(),
                    "patient.enrol",
                    &person.iss,
                    &patient_ref,
                )
                .await
                .map_err(unavailable)?;
            Ok(Json(json!({"enrolled": true})).into_response())
        }
        // One answer for unknown, used and expired codes: the reply must not help guessing.
        Enrolled::BadCode => Err(ApiError::invalid(
            "that code is unknown, used or expired; ask your clinic or pharmacy for a new one",
        )),
        Enrolled::Taken => Err(ApiError::conflict(
            "enrolled_elsewhere",
            "this sign-in is enrolled to another record already",
        )),
    }
}

/// `GET /patient/me`.
pub async fn me(State(state): State<AppState>, patient: Patient) -> Result<Response, ApiError> {
    state.audited(&patient, "patient.me", "").await?;
    Ok(Json(json!({
        "patient_ref": patient.patient_ref,
        "issuer": patient.person.iss,
        "subject": patient.person.sub,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// `prescription,lab_result`…
    #[serde(default)]
    pub kind: Option<String>,
    /// `YYYY-MM-DD` (Japan), inclusive.
    #[serde(default)]
    pub from: Option<String>,
    /// `YYYY-MM-DD` (Japan), inclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// The `next` of the page before.
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

fn parse_date(name: &str, text: &str) -> Result<Date, ApiError> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ApiError::bad_request(format!("{name} must be YYYY-MM-DD, not {text:?}")))?;
    let year = chrono::Datelike::year(&date);
    if !(1900..=2200).contains(&year) {
        return Err(ApiError::bad_request(format!(
            "{name} must be between 1900 and 2200"
        )));
    }
    Ok(Date::from(date))
}

/// A page cursor: `at.kind.key`, base64url, so it can be passed back as is.
fn cursor(entry: &crate::store::Entry) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!([entry.at, entry.kind().as_str(), entry.key]))
            .unwrap_or_default(),
    )
}

fn parse_cursor(text: &str) -> Result<(i64, String, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("before is not a cursor this service gave");
    if text.len() > 1024 {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    let (at, kind, key): (i64, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((at, kind, key))
}

/// `GET /patient/timeline`: everything in the record, newest first, a page at a time.
pub async fn timeline(
    State(state): State<AppState>,
    patient: Patient,
    JsonQuery(query): JsonQuery<TimelineQuery>,
) -> Result<Response, ApiError> {
    let kinds = match query.kind.as_deref() {
        Some(k) if k.len() > 200 => return Err(ApiError::bad_request("kind is too long")),
        Some(k) => record::kinds(k).map_err(ApiError::bad_request)?,
        None => Vec::new(),
    };
    let from = query
        .from
        .as_deref()
        .map(|d| parse_date("from", d))
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(|d| parse_date("to", d))
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("from is after to"));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let before = query.before.as_deref().map(parse_cursor).transpose()?;
    let filter = Filter {
        kinds,
        from: from.map(date_ms),
        to: to.map(|d| date_ms(d.plus_days(1))),
        before,
        limit: limit + 1,
    };
    state
        .audited(
            &patient,
            "patient.timeline",
            query.kind.as_deref().unwrap_or("all"),
        )
        .await?;
    let refs = state.refs(&patient).await?;
    let mut entries = state
        .store
        .entries(&refs, &filter)
        .await
        .map_err(unavailable)?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next = if more {
        entries.last().map(cursor)
    } else {
        None
    };
    Ok(Json(json!({
        "entries": entries.iter().map(record::item).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response())
}

/// `GET /patient/medications`.
pub async fn medications(
    State(state): State<AppState>,
    patient: Patient,
) -> Result<Response, ApiError> {
    state
        .audited(&patient, "patient.medications", "current")
        .await?;
    let entries = state.whole_record(&patient).await?;
    Ok(Json(record::medications(&entries, lifecycle::today_in_japan())).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendQuery {
    #[serde(default)]
    pub code: Option<String>,
}

/// `GET /patient/lab-trends?code=…`.
pub async fn lab_trends(
    State(state): State<AppState>,
    patient: Patient,
    JsonQuery(query): JsonQuery<TrendQuery>,
) -> Result<Response, ApiError> {
    if let Some(code) = &query.code {
        hixbus_service::text::check_line(code, 64)
            .map_err(|p| ApiError::bad_request(format!("code {p}")))?;
    }
    state
        .audited(
            &patient,
            "patient.lab_trends",
            query.code.as_deref().unwrap_or("all"),
        )
        .await?;
    let entries = state.whole_record(&patient).await?;
    Ok(Json(record::lab_trends(&entries, query.code.as_deref())).into_response())
}

/// `GET /patient/checkups`.
pub async fn checkups(
    State(state): State<AppState>,
    patient: Patient,
) -> Result<Response, ApiError> {
    state.audited(&patient, "patient.checkups", "all").await?;
    let entries = state.whole_record(&patient).await?;
    Ok(Json(record::checkups(&entries)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpenseQuery {
    #[serde(default)]
    pub year: Option<i32>,
}

/// `GET /patient/expenses?year=…`: the 医療費通知 view.
pub async fn expenses(
    State(state): State<AppState>,
    patient: Patient,
    JsonQuery(query): JsonQuery<ExpenseQuery>,
) -> Result<Response, ApiError> {
    if query.year.is_some_and(|y| !(1900..=2200).contains(&y)) {
        return Err(ApiError::bad_request("year must be between 1900 and 2200"));
    }
    state
        .audited(
            &patient,
            "patient.expenses",
            &query
                .year
                .map_or_else(|| "all".to_owned(), |y| y.to_string()),
        )
        .await?;
    let entries = state.whole_record(&patient).await?;
    Ok(Json(record::expenses(&entries, query.year)).into_response())
}

/// `GET /patient/export`: the whole record as a FHIR R4 Bundle.
pub async fn export(State(state): State<AppState>, patient: Patient) -> Result<Response, ApiError> {
    state.audited(&patient, "patient.export", "fhir").await?;
    let entries = state.whole_record(&patient).await?;
    let audit = state
        .audit
        .for_patient(&patient.patient_ref)
        .await
        .map_err(unavailable)?;
    let refs = state.refs(&patient).await?;
    let consents = state.consents(&refs).await?;
    let bundle: Value = export::bundle(&patient.patient_ref, &entries, &consents, &audit);
    Ok((
        [(header::CONTENT_TYPE, "application/fhir+json")],
        bundle.to_string(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reads_the_same_however_it_is_typed() {
        let code = new_code();
        assert_eq!(code.len(), CODE_CHARS);
        assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        let shown = shown_code(&code);
        assert_eq!(code_digest(&shown), code_digest(&code));
        assert_eq!(code_digest(&shown.to_lowercase()), code_digest(&code));
        assert_ne!(code_digest(&new_code()), code_digest(&code));
    }

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let (at, kind, key) = (1_700_000_000_000, "claim".to_owned(), "p/c-1".to_owned());
        let text = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&json!([at, kind, key])).unwrap())
        };
        assert_eq!(parse_cursor(&text).unwrap(), (at, kind, key));
        assert!(parse_cursor("not a cursor").is_err());
        assert!(parse_cursor(&"A".repeat(2000)).is_err());
    }
}
