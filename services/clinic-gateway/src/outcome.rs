//! FHIR `OperationOutcome`: how a FHIR server says what is wrong with a request, every problem
//! at once, each with where it is (`expression`), so a clinic system can show them all.

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
