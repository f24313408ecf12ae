//! FHIR `OperationOutcome`: how a FHIR server says what is wrong with a request, every problem
//! at once, each with where it is (`expression`), so a clinic system can show them all. Every
//! `/fhir/*` route answers its errors this way ([`Outcome`], which handlers return with `?`).

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One problem with a submitted resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// FHIR issue type: `structure`, `required`, `value`, `invalid`, `not-supported`, `conflict`.
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath-like location, e.g. `Bundle.entry[12].resource.dispenseRequest.quantity`.
    pub expression: String,
}

impl Issue {
    pub fn new(
        code: &'static str,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Self {
        Self {
            code,
            diagnostics: diagnostics.into(),
            expression: expression.into(),
        }
    }
}

/// The `OperationOutcome` resource for `issues`.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(|i| json!({
            "severity": "error",
            "code": i.code,
            "diagnostics": i.diagnostics,
            "expression": [i.expression],
        })).collect::<Vec<_>>(),
    })
}

/// A FHIR error answer: the status and every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
}

impl Outcome {
    pub fn new(status: StatusCode, issues: Vec<Issue>) -> Self {
        Self { status, issues }
    }

    /// One problem.
    pub fn one(
        status: StatusCode,
        code: &'static str,
        at: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Self::new(status, vec![Issue::new(code, at, why)])
    }

    /// 400 when the request is not the right kind of thing at all (a `structure` problem), 422
    /// when it is, but its content is incomplete or wrong.
    pub fn invalid(issues: Vec<Issue>) -> Self {
        let status = if issues.iter().any(|i| i.code == "structure") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Self::new(status, issues)
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            Json(operation_outcome(&self.issues)).0.to_string(),
        )
            .into_response()
    }
}

/// What a `/fhir/*` handler refuses with: problems with the resource as an `OperationOutcome`;
/// who may call (401, 403) in the JSON shape every API answers with, so a client's handling of
/// access refusals is the same on every route.
#[derive(Debug)]
pub enum FhirError {
    Outcome(Outcome),
    Access(crate::ApiError),
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        match self {
            Self::Outcome(outcome) => outcome.into_response(),
            Self::Access(e) => e.into_response(),
        }
    }
}

impl From<Outcome> for FhirError {
    fn from(outcome: Outcome) -> Self {
        Self::Outcome(outcome)
    }
}

impl From<hixbus_access::Denied> for FhirError {
    fn from(denied: hixbus_access::Denied) -> Self {
        Self::Access(denied.into())
    }
}

/// FHIR routes take `application/fhir+json` (or plain JSON); anything else is refused before
/// the body is read.
pub fn require_media_type(headers: &HeaderMap) -> Result<(), Outcome> {
    let media = crate::media_type(headers);
    if matches!(media, Some("application/fhir+json" | "application/json")) {
        return Ok(());
    }
    let shown: String = media.unwrap_or("").chars().take(64).collect();
    Err(Outcome::one(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not-supported",
        "Content-Type",
        format!("send application/fhir+json, not {shown:?}"),
    ))
}

/// The body as JSON, or a `structure` problem.
pub fn parse(body: &[u8]) -> Result<Value, Outcome> {
    serde_json::from_slice(body).map_err(|e| {
        Outcome::one(
            StatusCode::BAD_REQUEST,
            "structure",
            "$",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Every string in the request that contains a control or bidi character or is over-long,
/// as `value` problems at their location (see [`crate::text`]).
pub fn text_problems(body: &Value) -> Vec<Issue> {
    let root = body
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|r| r.len() <= 64 && r.chars().all(|c| c.is_ascii_alphabetic()))
        .unwrap_or("$");
    crate::text::scan_json(body, root, crate::text::MAX_STRING_CHARS)
        .into_iter()
        .map(|(at, problem)| Issue::new("value", at, format!("the text {problem}")))
        .collect()
}
