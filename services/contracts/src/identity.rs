//! The cross-institution patient reference, written the same way by every gateway: a patient
//! named by the same health insurance card is the same `patient_ref` at a clinic, a pharmacy and
//! a laboratory. Without one, a reference is the sender's own (`local:<org>:<id>`) until the
//! identity service links it (docs/labs.md: the identity rule).

use serde_json::Value;

use crate::events::{AdministrativeSex, Coverage, PublicExpense};
use crate::time::Date;

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

/// The public-expense payer number's system (公費負担者番号) on a Coverage's payor.
pub const PUBLIC_PAYER_NUMBER: &str = "urn:oid:1.2.392.100495.20.3.71";

/// What a prescription's Coverage resources say about billing: the health insurance (payor with
/// an insurer number) and any public-expense programmes (payor with a public payer number). Each
/// pair is a Coverage and its resolved payor. `None` when no health insurance is among them.
pub fn coverage<'a>(
    pairs: impl IntoIterator<Item = (&'a Value, &'a Value)>,
    birth_date: Option<Date>,
    sex: Option<AdministrativeSex>,
) -> Option<Coverage> {
    let mut insurance = None;
    let mut public_programs = Vec::new();
    for (coverage, payer) in pairs {
        if let Some(insurer) = payer_number(payer, INSURER_NUMBER) {
            if insurance.is_some() {
                continue;
            }
            let Some(number) = extension_string(coverage, INSURED_NUMBER) else {
                continue;
            };
            let branch = extension_string(coverage, INSURED_BRANCH)
                .or_else(|| coverage.get("dependent").and_then(Value::as_str));
            insurance = Some(Coverage {
                insurer_number: normalized(insurer),
                insurer_org: None,
                symbol: extension_string(coverage, INSURED_SYMBOL)
                    .map(normalized)
                    .filter(|s| !s.is_empty()),
                number: normalized(number),
                branch: branch.map(normalized).filter(|s| !s.is_empty()),
                copay_percent: copay_percent(coverage),
                birth_date,
                public_programs: Vec::new(),
                sex,
            });
        } else if let Some(payer_number) = payer_number(payer, PUBLIC_PAYER_NUMBER) {
            let Some(copay) = copay_percent(coverage) else {
                continue;
            };
            let date = |at: &str| {
                coverage
                    .pointer(at)
                    .and_then(Value::as_str)
                    .and_then(|d| d.get(..10))
                    .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .map(Date::from)
            };
            public_programs.push(PublicExpense {
                payer_number: normalized(payer_number),
                recipient_number: coverage
                    .get("subscriberId")
                    .and_then(Value::as_str)
                    .map(normalized),
                copay_percent: copay,
                valid_from: date("/period/start"),
                valid_to: date("/period/end"),
            });
        }
    }
    insurance.map(|insurance| Coverage {
        public_programs,
        ..insurance
    })
}

fn payer_number<'a>(payer: &'a Value, system: &str) -> Option<&'a str> {
    payer
        .get("identifier")
        .and_then(Value::as_array)?
        .iter()
        .find(|id| id.get("system").and_then(Value::as_str) == Some(system))?
        .get("value")?
        .as_str()
}

/// `costToBeneficiary` of type `copaypct` (負担率), a whole percentage from 0 to 100.
fn copay_percent(coverage: &Value) -> Option<i32> {
    coverage
        .get("costToBeneficiary")?
        .as_array()?
        .iter()
        .find(|c| {
            c.pointer("/type/coding")
                .and_then(Value::as_array)
                .is_some_and(|codes| {
                    codes
                        .iter()
                        .any(|code| code.get("code").and_then(Value::as_str) == Some("copaypct"))
                })
        })?
        .pointer("/valueQuantity/value")?
        .as_f64()
        .filter(|v| (0.0..=100.0).contains(v) && v.fract() == 0.0)
        .map(|v| v as i32)
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
pub fn normalized(text: &str) -> String {
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

    #[test]
    fn the_prescription_examples_coverages_give_the_insurance_and_the_public_programme() {
        let bundle: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/fhir/jp-eprescription/Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json"
        ))
        .unwrap();
        let resources: Vec<&Value> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        let payer = |coverage: &Value| {
            let reference = coverage["payor"][0]["reference"].as_str().unwrap();
            let id = reference.trim_start_matches("Organization/");
            *resources.iter().find(|r| r["id"] == id).unwrap()
        };
        let pairs: Vec<(&Value, &Value)> = resources
            .iter()
            .filter(|r| r["resourceType"] == "Coverage")
            .map(|c| (*c, payer(c)))
            .collect();
        let coverage = coverage(pairs, Date::from_ymd(1920, 2, 11), None).unwrap();
        assert_eq!(coverage.insurer_number, "06123456");
        assert_eq!(coverage.member_id(), "12345:67890:01");
        assert_eq!(coverage.copay_percent, Some(30));
        assert_eq!(coverage.public_programs.len(), 1);
        let public = &coverage.public_programs[0];
        assert_eq!(public.payer_number, "01234567");
        assert_eq!(public.recipient_number.as_deref(), Some("12345678"));
        assert_eq!(public.copay_percent, 10);
        assert_eq!(public.valid_to, Date::from_ymd(2020, 12, 31));
    }
}
