//! A clinic's, hospital's or pharmacy's FHIR R4 `Claim` (JSON), read into what `ClaimSubmitted`
//! carries. The insurance is a JP Core `Coverage` (contained, or inline in `insurance`), its
//! payor an `Organization` with the insurer number; the patient a contained `Patient` (its
//! birth date sets the age rule when the Coverage states no share). Every problem is reported
//! at once, with where it is.

use chrono::NaiveDate;
use hixbus_contracts::identity;
use hixbus_contracts::{ClaimLine, ClaimLineType, ClaimType, CodedConcept, Coverage, Date};
use hixbus_service::fhir::Issue;
use hixbus_service::text;
use serde_json::Value;

use crate::tariff::{FEE_SYSTEM, HOT9, YJ};

/// The most items one claim may have (a month's outpatient receipt has tens).
pub const MAX_ITEMS: usize = 500;
/// The most diagnoses one claim may have.
pub const MAX_DIAGNOSES: usize = 50;
/// The largest amount a line or a claim may bill, in yen.
pub const MAX_AMOUNT_JPY: i64 = 100_000_000;
/// The longest claim identifier.
pub const MAX_IDENTIFIER_CHARS: usize = 128;
/// How far back a service may be billed (a claim is made monthly; a return may come a few
/// years later at most).
pub const MAX_AGE_DAYS: i64 = 5 * 366;

/// What a FHIR `Claim` says.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirClaim {
    pub claim_id: String,
    pub claim_type: ClaimType,
    pub service_start: Date,
    pub service_end: Date,
    pub diagnoses: Vec<CodedConcept>,
    pub lines: Vec<ClaimLine>,
    pub total_jpy: i64,
    pub coverage: Coverage,
    pub patient_ref: String,
    pub prescription_id: Option<String>,
}

fn date(text: Option<&Value>) -> Option<Date> {
    let text = text?.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d")
        .ok()
        .map(Date::from)
}

fn str_at<'a>(v: &'a Value, at: &str) -> Option<&'a str> {
    v.pointer(at).and_then(Value::as_str)
}

/// Resolves `#id` against `contained`.
fn contained<'a>(claim: &'a Value, reference: Option<&str>) -> Option<&'a Value> {
    let id = reference?.strip_prefix('#')?;
    claim
        .get("contained")?
        .as_array()?
        .iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
}

fn coded(v: Option<&Value>) -> Option<CodedConcept> {
    let v = v?;
    Some(CodedConcept {
        system: v.get("system")?.as_str()?.to_owned(),
        code: v.get("code")?.as_str()?.to_owned(),
        display: v.get("display").and_then(Value::as_str).map(str::to_owned),
    })
}

/// Whole yen from a FHIR Money, or a problem.
fn yen(money: Option<&Value>, at: &str, issues: &mut Vec<Issue>) -> Option<i64> {
    let money = money?;
    if let Some(currency) = money.get("currency").and_then(Value::as_str)
        && currency != "JPY"
    {
        issues.push(Issue::new(
            "value",
            format!("{at}.currency"),
            format!("amounts are in JPY, not {currency:?}"),
        ));
        return None;
    }
    match money.get("value").and_then(Value::as_f64) {
        Some(v) if v.fract() == 0.0 && (0.0..=MAX_AMOUNT_JPY as f64).contains(&v) => Some(v as i64),
        _ => {
            issues.push(Issue::new(
                "value",
                format!("{at}.value"),
                format!("an amount is whole yen from 0 to {MAX_AMOUNT_JPY}"),
            ));
            None
        }
    }
}

/// Reads a `Claim`; `today` bounds the service dates.
pub fn read(claim: &Value, today: Date) -> Result<FhirClaim, Vec<Issue>> {
    if claim.get("resourceType").and_then(Value::as_str) != Some("Claim") {
        return Err(vec![Issue::new(
            "structure",
            "resourceType",
            "expected a Claim",
        )]);
    }
    let mut issues = hixbus_service::fhir::text_problems(claim);
    let claim_id = claim
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().find_map(|id| id.get("value")?.as_str()))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match claim_id {
        None => issues.push(Issue::new(
            "required",
            "Claim.identifier",
            "the Claim needs an identifier: it names the claim and makes resubmission safe",
        )),
        Some(id) => {
            if let Err(p) = text::check_line(id, MAX_IDENTIFIER_CHARS) {
                issues.push(Issue::new(
                    "value",
                    "Claim.identifier",
                    format!("the identifier {p}"),
                ));
            }
        }
    }
    if let Some(status) = claim.get("status").and_then(Value::as_str)
        && status != "active"
    {
        issues.push(Issue::new(
            "value",
            "Claim.status",
            format!("only an active claim is billed, not {status:?}"),
        ));
    }
    let claim_type = match str_at(claim, "/type/coding/0/code") {
        Some("pharmacy") => ClaimType::Pharmacy,
        Some("professional") => ClaimType::Professional,
        Some("institutional") => ClaimType::Institutional,
        other => {
            issues.push(Issue::new(
                "value",
                "Claim.type",
                format!(
                    "type is pharmacy, professional or institutional (claim-type), not {:?}",
                    other.unwrap_or("")
                ),
            ));
            ClaimType::Unknown
        }
    };

    // Service dates: billablePeriod, or the items' servicedDate.
    let mut start = date(claim.pointer("/billablePeriod/start"));
    let mut end = date(claim.pointer("/billablePeriod/end")).or(start);
    let items: Vec<&Value> = claim
        .get("item")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if items.is_empty() {
        issues.push(Issue::new(
            "required",
            "Claim.item",
            "the Claim bills no item",
        ));
    }
    if items.len() > MAX_ITEMS {
        return Err(vec![Issue::new(
            "too-costly",
            "Claim.item",
            format!("a claim has at most {MAX_ITEMS} items, not {}", items.len()),
        )]);
    }
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("Claim.item[{i}]");
        let line_no = i32::try_from(i + 1).unwrap_or(i32::MAX);
        if let Some(served) = date(item.get("servicedDate")) {
            start = Some(start.map_or(served, |s| s.min(served)));
            end = Some(end.map_or(served, |e| e.max(served)));
        }
        let Some(service) = coded(item.pointer("/productOrService/coding/0")) else {
            issues.push(Issue::new(
                "required",
                format!("{at}.productOrService"),
                "an item needs a coded product or service (system and code)",
            ));
            continue;
        };
        let quantity = item
            .pointer("/quantity/value")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        if !(quantity > 0.0 && quantity <= 100_000.0) {
            issues.push(Issue::new(
                "value",
                format!("{at}.quantity"),
                "a quantity is more than 0 and at most 100000",
            ));
        }
        let unit_price = yen(
            item.get("unitPrice"),
            &format!("{at}.unitPrice"),
            &mut issues,
        );
        let net = yen(item.get("net"), &format!("{at}.net"), &mut issues)
            .or_else(|| unit_price.map(|p| (p as f64 * quantity).round() as i64));
        let Some(amount) = net else {
            issues.push(Issue::new(
                "required",
                format!("{at}.net"),
                "an item needs its amount (net, or unitPrice × quantity)",
            ));
            continue;
        };
        let line_type = match service.system.as_str() {
            HOT9 | YJ => ClaimLineType::Drug,
            FEE_SYSTEM => ClaimLineType::Fee,
            _ => ClaimLineType::Other,
        };
        lines.push(ClaimLine {
            line_no,
            service,
            quantity,
            unit_price_jpy: unit_price,
            amount_jpy: amount,
            line_type,
            prescription_line_no: None,
            unit: item
                .pointer("/quantity/unit")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    let (service_start, service_end) = match (start, end) {
        (Some(s), Some(e)) if s <= e => (s, e),
        (Some(_), Some(_)) => {
            issues.push(Issue::new(
                "value",
                "Claim.billablePeriod",
                "the billable period ends before it starts",
            ));
            (today, today)
        }
        _ => {
            issues.push(Issue::new(
                "required",
                "Claim.billablePeriod",
                "no service date: set billablePeriod or the items' servicedDate",
            ));
            (today, today)
        }
    };
    if service_end > today.plus_days(1) {
        issues.push(Issue::new(
            "value",
            "Claim.billablePeriod",
            "a claim bills services already given, not future ones",
        ));
    }
    if service_start.plus_days(i32::try_from(MAX_AGE_DAYS).unwrap_or(i32::MAX)) < today {
        issues.push(Issue::new(
            "value",
            "Claim.billablePeriod",
            "the service is more than five years old",
        ));
    }

    let total: i64 = lines.iter().map(|l| l.amount_jpy).sum();
    if let Some(stated) = yen(claim.get("total"), "Claim.total", &mut issues)
        && stated != total
        && issues.is_empty()
    {
        issues.push(Issue::new(
            "value",
            "Claim.total",
            format!("the total is {stated} yen but the items add up to {total} yen"),
        ));
    }

    let diagnoses: Vec<CodedConcept> = claim
        .get("diagnosis")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|d| coded(d.pointer("/diagnosisCodeableConcept/coding/0")))
                .collect()
        })
        .unwrap_or_default();
    if diagnoses.len() > MAX_DIAGNOSES {
        issues.push(Issue::new(
            "value",
            "Claim.diagnosis",
            format!("a claim has at most {MAX_DIAGNOSES} diagnoses"),
        ));
    }

    let patient = contained(claim, str_at(claim, "/patient/reference"));
    let birth = patient.and_then(|p| date(p.get("birthDate")));
    let coverage = read_coverage(claim, birth);
    if coverage.is_none() {
        issues.push(Issue::new(
            "required",
            "Claim.insurance",
            "the Claim's insurance needs a JP Core Coverage (contained, with the insured person's number) whose payor is an Organization with the insurer number (urn:oid:1.2.392.100495.20.3.61)",
        ));
    }
    let prescription_id = claim
        .pointer("/prescription/identifier/value")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if claim_type == ClaimType::Pharmacy && prescription_id.is_none() {
        issues.push(Issue::new(
            "required",
            "Claim.prescription",
            "a pharmacy claim names the prescription it dispensed (prescription.identifier)",
        ));
    }
    match (issues.is_empty(), claim_id, coverage) {
        (true, Some(claim_id), Some(coverage)) => Ok(FhirClaim {
            claim_id: claim_id.to_owned(),
            claim_type,
            service_start,
            service_end,
            diagnoses,
            lines,
            total_jpy: total,
            patient_ref: identity::insured_ref(
                &coverage.insurer_number,
                coverage.symbol.as_deref().unwrap_or_default(),
                &coverage.number,
                coverage.branch.as_deref().unwrap_or_default(),
            ),
            coverage,
            prescription_id,
        }),
        _ => Err(issues),
    }
}

/// Every `insurance[].coverage` (contained), each with its payor (contained).
fn read_coverage(claim: &Value, birth: Option<Date>) -> Option<Coverage> {
    let insurance = claim.get("insurance")?.as_array()?;
    let pairs: Vec<(&Value, &Value)> = insurance
        .iter()
        .filter_map(|i| {
            let coverage = contained(claim, str_at(i, "/coverage/reference"))?;
            let payer = contained(claim, str_at(coverage, "/payor/0/reference"))?;
            Some((coverage, payer))
        })
        .collect();
    identity::coverage(pairs, birth, None)
}
