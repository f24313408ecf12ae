//! 特定健診 (specific health checkup) reports: the eCheckupReport FHIR document `Bundle`
//! (`JP_Bundle_eCheckupGeneral`) read into one `CheckupCompleted`. Mapping: docs/checkups.md.

use hixbus_contracts::identity;
use hixbus_contracts::{CheckupType, CodedConcept, Date, Observation, QuestionnaireAnswer};
use hixbus_service::fhir::Issue;
use serde_json::Value;

use crate::fhir::{Profile, Resources, array_at, concept, observation, str_at};

/// The document type of a checkup report (検診・健診報告書).
pub const CHECKUP_DOCUMENT: &str = "53576-5";
/// The checkup programme a Composition's `category` names (`10` is 特定健診).
const PROGRAMME: &str = "urn:oid:2.16.840.1.113883.2.2.1.6.1001";
/// The checkup item code table (特定健診項目コード).
pub const ITEM_CODES: &str = "urn:oid:1.2.392.200119.6.1005";
const METABOLIC_SYNDROME: &str = "9N501000000000011";
const GUIDANCE_LEVEL: &str = "9N506000000000011";
const PHYSICIANS_JUDGEMENT: &str = "9N511000000000049";
/// The most Observations one checkup may carry (the 特定健診 set is under a hundred).
pub const MAX_ITEMS: usize = 300;

/// A checkup report as read from the Bundle: everything of `CheckupCompleted` but who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckupReport {
    pub checkup_id: String,
    pub checkup_type: CheckupType,
    pub patient_ref: String,
    /// The insurer number (保険者番号) from the Coverage.
    pub insurer_number: String,
    pub performed_on: Date,
    pub items: Vec<Observation>,
    pub questionnaire: Vec<QuestionnaireAnswer>,
    pub overall_assessment: Option<String>,
    pub metabolic_syndrome: Option<CodedConcept>,
    pub guidance_level: Option<CodedConcept>,
}

/// Whether `body` is a checkup document (its Composition's type), not a lab Bundle.
pub fn is_checkup(body: &Value) -> bool {
    array_at(body, "/entry")
        .iter()
        .filter_map(|e| e.get("resource"))
        .find(|r| str_at(r, "/resourceType") == Some("Composition"))
        .is_some_and(|c| {
            array_at(c, "/type/coding")
                .iter()
                .any(|t| str_at(t, "/code") == Some(CHECKUP_DOCUMENT))
        })
}

pub fn read(body: &Value) -> Result<CheckupReport, Vec<Issue>> {
    let mut issues = Vec::new();
    if str_at(body, "/type") != Some("document") {
        issues.push(Issue::new(
            "value",
            "Bundle.type",
            "a checkup report is a document Bundle",
        ));
    }
    let resources = Resources::of(body);
    let entries = array_at(body, "/entry");
    let Some((c_at, composition)) = entries.iter().enumerate().find_map(|(i, e)| {
        e.get("resource")
            .filter(|r| str_at(r, "/resourceType") == Some("Composition"))
            .map(|r| (i, r))
    }) else {
        return Err(vec![Issue::new(
            "required",
            "Bundle.entry",
            "a checkup document starts with its Composition",
        )]);
    };
    let c_at = format!("Bundle.entry[{c_at}].resource");
    let checkup_type = match array_at(composition, "/category/0/coding")
        .iter()
        .find(|c| str_at(c, "/system") == Some(PROGRAMME))
        .and_then(|c| str_at(c, "/code"))
    {
        Some("10") => CheckupType::SpecificHealthCheckup,
        _ => CheckupType::Other,
    };
    let checkup_id = str_at(body, "/identifier/value")
        .or_else(|| str_at(composition, "/identifier/value"))
        .map(str::to_owned);
    if checkup_id.is_none() {
        issues.push(Issue::new(
            "required",
            "Bundle.identifier",
            "the document's identifier is required (a corrected report is sent under the same one)",
        ));
    }
    let patient = resources.resolve(composition.get("subject"));
    if patient.is_none_or(|p| str_at(p, "/resourceType") != Some("Patient")) {
        issues.push(Issue::new(
            "required",
            format!("{c_at}.subject"),
            "the Composition's subject must be the Patient in the Bundle",
        ));
    }
    // The insurer the checkup goes to, and the patient as the insurer knows them.
    let insured = entries
        .iter()
        .filter_map(|e| e.get("resource"))
        .filter(|r| str_at(r, "/resourceType") == Some("Coverage"))
        .find_map(|coverage| {
            let payer = resources.resolve(coverage.pointer("/payor/0"))?;
            identity::insured(coverage, payer)
        });
    if insured.is_none() {
        issues.push(Issue::new(
            "required",
            "Bundle.entry",
            "the insurance Coverage (insured person's symbol, number and branch; payor with the insurer number) is required: a specific health checkup goes to the patient's insurer",
        ));
    }
    let performed_on = resources
        .resolve(composition.get("encounter"))
        .and_then(|e| str_at(e, "/period/start"))
        .or_else(|| str_at(composition, "/date"))
        .and_then(|d| d.get(..10))
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .map(Date::from);
    if performed_on.is_none() {
        issues.push(Issue::new(
            "required",
            format!("{c_at}.encounter"),
            "when the checkup was performed is required (the Encounter's period.start, else the Composition's date)",
        ));
    }

    let observations: Vec<(usize, &Value)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.get("resource").map(|r| (i, r)))
        .filter(|(_, r)| str_at(r, "/resourceType") == Some("Observation"))
        .collect();
    if observations.is_empty() {
        issues.push(Issue::new(
            "required",
            "Bundle.entry",
            "the checkup holds no Observation",
        ));
    }
    if observations.len() > MAX_ITEMS {
        return Err(vec![Issue::new(
            "too-costly",
            "Bundle.entry",
            format!("at most {MAX_ITEMS} Observations per checkup"),
        )]);
    }
    let mut items = Vec::new();
    let mut questionnaire = Vec::new();
    let mut overall_assessment = None;
    let mut metabolic_syndrome = None;
    let mut guidance_level = None;
    for (i, o) in observations {
        let at = format!("Bundle.entry[{i}].resource");
        let result = match observation(o, &at, Profile::CheckupItem) {
            Ok(result) => result,
            Err(mut problems) => {
                issues.append(&mut problems);
                continue;
            }
        };
        let is_answer = array_at(o, "/category")
            .iter()
            .flat_map(|c| array_at(c, "/coding"))
            .any(|c| str_at(c, "/code") == Some("social-history"));
        if result.code.system == ITEM_CODES {
            match result.code.code.as_str() {
                METABOLIC_SYNDROME => metabolic_syndrome = result.value_coded.clone(),
                GUIDANCE_LEVEL => guidance_level = result.value_coded.clone(),
                PHYSICIANS_JUDGEMENT => overall_assessment = result.value_text.clone(),
                _ => {}
            }
        }
        if is_answer {
            questionnaire.push(QuestionnaireAnswer {
                question: result.code,
                answer_coded: result.value_coded,
                answer_text: result.value_text.or_else(|| {
                    o.get("valueCodeableConcept")
                        .and_then(concept)
                        .and_then(|c| c.display)
                }),
            });
        } else {
            items.push(result);
        }
    }
    let (Some(insured), Some(performed_on), true) = (insured, performed_on, issues.is_empty())
    else {
        return Err(issues);
    };
    Ok(CheckupReport {
        checkup_id: checkup_id.unwrap_or_default(),
        checkup_type,
        patient_ref: insured.patient_ref,
        insurer_number: insured.insurer,
        performed_on,
        items,
        questionnaire,
        overall_assessment,
        metabolic_syndrome,
        guidance_level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/fhir/jp-echeckup/Bundle-Bundle-eCheckupReport-Sample-01.json"
        ))
        .unwrap()
    }

    #[test]
    fn the_official_sample_is_one_specific_health_checkup_with_all_44_observations() {
        let body = sample();
        assert!(is_checkup(&body));
        let report = read(&body).unwrap();
        assert_eq!(report.checkup_type, CheckupType::SpecificHealthCheckup);
        assert_eq!(report.items.len() + report.questionnaire.len(), 44);
        assert_eq!(report.questionnaire.len(), 22, "the social-history answers");
        assert_eq!(report.patient_ref, "jp-insured:06123456:12345:67890:01");
        assert_eq!(report.insurer_number, "06123456");
        assert_eq!(report.performed_on.to_string(), "2020-04-04");
        assert_eq!(report.items[0].code.display.as_deref(), Some("身長"));
        assert_eq!(report.items[0].value_numeric, Some(162.3));
        assert_eq!(report.items[0].unit.as_deref(), Some("cm"));
        assert_eq!(
            report.metabolic_syndrome.as_ref().map(|c| c.code.as_str()),
            Some("3")
        );
        assert_eq!(
            report.guidance_level.and_then(|c| c.display).as_deref(),
            Some("なし")
        );
        assert!(report.overall_assessment.unwrap().starts_with("肝機能"));
        assert_eq!(
            report.questionnaire[0]
                .answer_coded
                .as_ref()
                .map(|c| c.code.as_str()),
            Some("2")
        );
    }

    #[test]
    fn without_the_insurance_coverage_it_is_refused() {
        let mut body = sample();
        let entries = body["entry"].as_array_mut().unwrap();
        entries.retain(|e| e["resource"]["resourceType"] != "Coverage");
        let issues = read(&body).unwrap_err();
        assert!(
            issues.iter().any(|i| i.diagnostics.contains("Coverage")),
            "{issues:?}"
        );
    }
}
