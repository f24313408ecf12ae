//! The cross-institution patient reference, written the same way by every gateway: a patient
//! named by the same health insurance card is the same `patient_ref` at a clinic, a pharmacy and
//! a laboratory. Without one, a reference is the sender's own (`local:<org>:<id>`) until the
//! identity service links it (docs/labs.md: the identity rule).

use serde_json::Value;

/// The reference of the insured person `insurer` / `symbol` (記号) / `number` (番号) /
/// `branch` (枝番), full-width digits normalized and whitespace dropped.
pub fn insured_ref(insurer: &str, symbol: &str, number: &str, branch: &str) -> String {
    format!(
        "jp-insured:{}:{}:{}:{}",
        normalized(insurer),
        normalized(symbol),
        normalized(number),
        normalized(branch),
    )
}

/// JP-CLINS' insurance member id (`JP_Insurance_memberID`): `insurer:symbol:number:branch`.
pub const CLINS_MEMBER_ID: &str = "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID";

/// The reference for a JP-CLINS insurance member id, `None` if it is not four parts with an
/// insurer and a number.
pub fn member_id_ref(member_id: &str) -> Option<String> {
    let parts: Vec<&str> = member_id.split(':').collect();
    match parts.as_slice() {
        [insurer, symbol, number, branch]
            if !normalized(insurer).is_empty() && !normalized(number).is_empty() =>
        {
            Some(insured_ref(insurer, symbol, number, branch))
        }
        _ => None,
    }
}

/// The insurer number's system (保険者番号) on a Coverage's payor Organization.
pub const INSURER_NUMBER: &str = "urn:oid:1.2.392.100495.20.3.61";
const INSURED_SYMBOL: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSymbol";
const INSURED_NUMBER: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonNumber";
const INSURED_BRANCH: &str =
    "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSubNumber";

/// What a JP Core health-insurance `Coverage` says of the insured person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insured {
    /// The insurer number (保険者番号), as written.
    pub insurer: String,
    /// The cross-institution patient reference ([`insured_ref`]).
    pub patient_ref: String,
}

/// Reads a JP Core insurance `Coverage` (its insured-person extensions) and its payor
/// `payer` (an Organization with the insurer number); `None` when either lacks what is needed.
pub fn insured(coverage: &Value, payer: &Value) -> Option<Insured> {
    let symbol = extension_string(coverage, INSURED_SYMBOL);
    let number = extension_string(coverage, INSURED_NUMBER)?;
    let insurer = payer
        .get("identifier")
        .and_then(Value::as_array)?
        .iter()
        .find(|id| id.get("system").and_then(Value::as_str) == Some(INSURER_NUMBER))?
        .get("value")?
        .as_str()?;
    let branch = extension_string(coverage, INSURED_BRANCH)
        .or_else(|| coverage.get("dependent").and_then(Value::as_str));
    Some(Insured {
        insurer: normalized(insurer),
        patient_ref: insured_ref(
            insurer,
            symbol.unwrap_or_default(),
            number,
            branch.unwrap_or_default(),
        ),
    })
}

fn extension_string<'a>(resource: &'a Value, url: &str) -> Option<&'a str> {
    resource
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))?
        .get("valueString")?
        .as_str()
}

/// A sender's own reference of a patient, before any link.
pub fn local_ref(org_id: &str, local_id: &str) -> String {
    format!("local:{org_id}:{local_id}")
}

/// Insurance numbers are often typed with full-width digits; the same card must give the same
/// reference however it was typed.
fn normalized(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
            _ => c,
        })
        .filter(|c| !c.is_whitespace())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clins_member_id_is_the_same_patient_as_the_prescriptions_coverage() {
        assert_eq!(
            member_id_ref("00012345:あいう:１８７:05").as_deref(),
            Some("jp-insured:00012345:あいう:187:05")
        );
        assert_eq!(
            insured_ref("06123456", "１２３４５", "67890", "01"),
            "jp-insured:06123456:12345:67890:01"
        );
        assert_eq!(member_id_ref("00012345:187"), None);
        assert_eq!(member_id_ref(":x:187:05"), None);
    }
}
