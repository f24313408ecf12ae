//! From what clinic systems send (HL7 FHIR R4 JSON, including Japan's e-prescription profile) to
//! a `PrescriptionIssued`.
//!
//! Input is read as JSON and walked explicitly rather than through a full FHIR model: the gateway
//! needs a few dozen elements, must name every problem with its location, and must accept the
//! profiles' extensions without knowing them all. Every problem is collected before answering.
//!
//! Patients are identified across institutions by their health-insurance card (insurer number,
//! symbol, number, branch), as Japan's national services do; without insurance information the
//! patient is known only to the issuing organization (`local:<org>:<patient id>`), and the
//! medication-safety check then cannot see their prescriptions from elsewhere.

use std::collections::HashMap;

use chrono::NaiveDate;
use hixbus_contracts::identity;
use hixbus_contracts::lifecycle::{self, MAX_LINES};
use hixbus_contracts::{
    AdministrativeSex, CodedConcept, Coverage, Date, MedicationLine, PractitionerRef, Quantity,
};
use hixbus_service::text;
use serde::Serialize;
use serde_json::Value;

use hixbus_service::fhir::Issue;

/// The longest identifier (of a Bundle, a patient, a prescriber) accepted: FHIR ids are at most
/// 64 characters and real identifier values far shorter.
pub const MAX_IDENTIFIER_CHARS: usize = 256;

/// The most entries a prescription Bundle may have: every line plus the document's other
/// resources (Composition, Patient, Coverages, Organizations, Practitioner…) with room to spare.
pub const MAX_ENTRIES: usize = MAX_LINES + 60;

/// JP drug code systems, in order of preference for the line's main code: HOT9, then YJ, then
/// anything else the clinic sent.
pub const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
pub const YJ: &str = "urn:oid:1.2.392.100495.20.1.73";
const RP_NUMBER: &str = "urn:oid:1.2.392.100495.20.3.81";
const SUBSTITUTION_NOT_ALLOWED: &str = "urn:oid:1.2.392.100495.20.2.41";

/// What the gateway takes from a submission, before ids and envelope are added. Serialized, it
/// is the normalized request a resubmission is compared by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    /// The clinic's own identifier of this prescription (`system|value`): the idempotency key.
    pub identifier: String,
    pub patient_ref: String,
    /// The clinic's own id of the patient (the Patient's first identifier) when the patient is
    /// named by insurance too: the link the identity rule learns from a prescription.
    #[serde(skip)]
    pub patient_local_id: Option<String>,
    pub prescriber: PractitionerRef,
    pub issued_on: Date,
    /// Where the issue date was read (for an error about it).
    #[serde(skip)]
    pub issued_on_at: &'static str,
    pub lines: Vec<MedicationLine>,
    pub notes: Option<String>,
    /// The insurance billed, from the Bundle's Coverage resources (JP Core).
    #[serde(skip)]
    pub coverage: Option<Coverage>,
}

/// Reads a prescription document `Bundle` (`type` = `document`, with a `Composition`, the
/// `Patient` and one or more `MedicationRequest`s).
pub fn read_bundle(body: &Value, org_id: &str) -> Result<Submission, Vec<Issue>> {
    let mut issues = Vec::new();
    if body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(vec![Issue::new(
            "structure",
            "resourceType",
            format!(
                "expected a Bundle, got {}",
                body.get("resourceType")
                    .map_or("no resourceType".to_owned(), Value::to_string)
            ),
        )]);
    }
    let kind = body.get("type").and_then(Value::as_str);
    if !matches!(
        kind,
        Some("document") | Some("collection") | Some("transaction")
    ) {
        issues.push(Issue::new(
            "value",
            "Bundle.type",
            "a prescription Bundle must be a document (or a collection/transaction of MedicationRequests)",
        ));
    }
    let identifier = identifier_key(body.get("identifier"));
    match &identifier {
        None => issues.push(Issue::new(
            "required",
            "Bundle.identifier",
            "the Bundle needs an identifier (system and value): it makes resubmission safe",
        )),
        Some(key) => check_identifier(key, "Bundle.identifier", &mut issues),
    }
    let entries: &[Value] = body
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if entries.len() > MAX_ENTRIES {
        return Err(vec![Issue::new(
            "too-costly",
            "Bundle.entry",
            format!(
                "the Bundle has {} entries; a prescription has at most {MAX_ENTRIES}",
                entries.len()
            ),
        )]);
    }
    if entries.is_empty() {
        issues.push(Issue::new(
            "required",
            "Bundle.entry",
            "the Bundle has no entries",
        ));
    }
    let resources = Resources::index(entries);
    issues.extend(resources.duplicates.iter().cloned());
    for kind in ["Patient", "Composition"] {
        let count = resources.all(kind).count();
        if count > 1 {
            issues.push(Issue::new(
                "value",
                "Bundle.entry",
                format!("the Bundle has {count} {kind} resources; a prescription has exactly one"),
            ));
        }
    }

    let patient = resources.first("Patient");
    let patient_ref = match patient {
        Some((_, patient)) => patient_reference(patient, &resources, org_id),
        None => {
            issues.push(Issue::new(
                "required",
                "Bundle.entry",
                "the Bundle has no Patient",
            ));
            None
        }
    };
    if patient.is_some() && patient_ref.is_none() {
        issues.push(Issue::new(
            "required",
            "Patient.identifier",
            "the Patient has no identifier and there is no insurance Coverage to identify them by",
        ));
    }

    let prescriber = resources
        .first("Practitioner")
        .map(|(_, p)| practitioner(p))
        .unwrap_or(PractitionerRef {
            id: format!("{org_id}:unknown-prescriber"),
            name: None,
            department: None,
        });
    let department = resources
        .all("Organization")
        .find(|(_, o)| has_type(o, "dept"))
        .and_then(|(_, o)| o.get("name").and_then(Value::as_str).map(str::to_owned));
    let prescriber = PractitionerRef {
        department,
        ..prescriber
    };

    let composition = resources.first("Composition").map(|(_, c)| c);
    if kind == Some("document") && composition.is_none() {
        issues.push(Issue::new(
            "required",
            "Bundle.entry",
            "a document Bundle starts with a Composition",
        ));
    }
    let issued_on = composition
        .and_then(|c| c.get("date"))
        .or_else(|| body.get("timestamp"))
        .and_then(Value::as_str)
        .and_then(parse_date);

    let mut lines = Vec::new();
    let mut requests: Vec<_> = resources.all("MedicationRequest").collect();
    if requests.is_empty() {
        issues.push(Issue::new(
            "required",
            "Bundle.entry",
            "the Bundle has no MedicationRequest",
        ));
    }
    if requests.len() > MAX_LINES {
        issues.push(Issue::new(
            "value",
            "Bundle.entry",
            format!(
                "the Bundle has {} MedicationRequests; a prescription has at most {MAX_LINES} lines",
                requests.len()
            ),
        ));
        requests.clear();
    }
    let mut authored = None;
    for (index, request) in requests {
        let at = format!("Bundle.entry[{index}].resource");
        authored = authored.or_else(|| {
            request
                .get("authoredOn")
                .and_then(Value::as_str)
                .and_then(parse_date)
        });
        match medication_line(request, lines.len() as i32 + 1, &at) {
            Ok(line) => lines.push(line),
            Err(mut problems) => issues.append(&mut problems),
        }
    }
    let issued_on_at = if issued_on.is_some() {
        "Composition.date"
    } else {
        "MedicationRequest.authoredOn"
    };
    let issued_on = issued_on.or(authored);
    if issued_on.is_none() {
        issues.push(Issue::new(
            "required",
            "Composition.date",
            "no issue date: set Composition.date or MedicationRequest.authoredOn",
        ));
    }
    let notes = resources
        .first("Communication")
        .and_then(|(_, c)| c.pointer("/payload/0/contentString"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    if !issues.is_empty() {
        return Err(issues);
    }
    let patient_local_id = patient
        .and_then(|(_, p)| p.pointer("/identifier/0/value"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .filter(|_| {
            patient_ref
                .as_deref()
                .is_some_and(|r| r.starts_with("jp-insured:"))
        })
        .map(str::to_owned);
    let birth_date = patient
        .and_then(|(_, p)| p.get("birthDate"))
        .and_then(Value::as_str)
        .and_then(parse_date);
    let sex = patient
        .and_then(|(_, p)| p.get("gender"))
        .and_then(Value::as_str)
        .and_then(AdministrativeSex::from_fhir);
    let coverage = identity::coverage(
        resources.all("Coverage").filter_map(|(_, coverage)| {
            Some((coverage, resources.resolve(coverage.pointer("/payor/0"))?))
        }),
        birth_date,
        sex,
    );
    Ok(Submission {
        coverage,
        identifier: identifier.unwrap_or_default(),
        patient_ref: patient_ref.unwrap_or_default(),
        patient_local_id,
        prescriber,
        issued_on: issued_on.unwrap_or(Date::from_days_since_epoch(0)),
        issued_on_at,
        lines,
        notes,
    })
}

fn check_identifier(key: &str, at: &str, issues: &mut Vec<Issue>) {
    if let Err(problem) = text::check_line(key, MAX_IDENTIFIER_CHARS) {
        issues.push(Issue::new("value", at, format!("the identifier {problem}")));
    }
}

/// Reads one `MedicationRequest` sent on its own: a one-line prescription whose patient is the
/// clinic's own (`subject` reference or identifier).
pub fn read_medication_request(body: &Value, org_id: &str) -> Result<Submission, Vec<Issue>> {
    if body.get("resourceType").and_then(Value::as_str) != Some("MedicationRequest") {
        return Err(vec![Issue::new(
            "structure",
            "resourceType",
            "expected a MedicationRequest",
        )]);
    }
    let mut issues = Vec::new();
    let identifier = body
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().find_map(|id| identifier_key(Some(id))))
        .or_else(|| {
            body.get("id")
                .and_then(Value::as_str)
                .map(|id| format!("MedicationRequest|{id}"))
        });
    match &identifier {
        None => issues.push(Issue::new(
            "required",
            "MedicationRequest.identifier",
            "the MedicationRequest needs an identifier or id: it makes resubmission safe",
        )),
        Some(key) => check_identifier(key, "MedicationRequest.identifier", &mut issues),
    }
    let patient_ref = body
        .pointer("/subject/identifier/value")
        .and_then(Value::as_str)
        .map(|v| format!("local:{org_id}:{v}"))
        .or_else(|| {
            body.pointer("/subject/reference")
                .and_then(Value::as_str)
                .map(|r| format!("local:{org_id}:{}", r.trim_start_matches("Patient/")))
        });
    match &patient_ref {
        None => issues.push(Issue::new(
            "required",
            "MedicationRequest.subject",
            "the MedicationRequest does not say which patient it is for",
        )),
        Some(patient) => check_identifier(patient, "MedicationRequest.subject", &mut issues),
    }
    let issued_on = body
        .get("authoredOn")
        .and_then(Value::as_str)
        .and_then(parse_date);
    if issued_on.is_none() {
        issues.push(Issue::new(
            "required",
            "MedicationRequest.authoredOn",
            "authoredOn (the issue date) is required",
        ));
    }
    let line = match medication_line(body, 1, "MedicationRequest") {
        Ok(line) => Some(line),
        Err(mut problems) => {
            issues.append(&mut problems);
            None
        }
    };
    if !issues.is_empty() {
        return Err(issues);
    }
    let prescriber_id = body
        .pointer("/requester/reference")
        .and_then(Value::as_str)
        .map_or_else(
            || format!("{org_id}:unknown-prescriber"),
            |r| format!("{org_id}:{r}"),
        );
    Ok(Submission {
        coverage: None,
        identifier: identifier.unwrap_or_default(),
        patient_ref: patient_ref.unwrap_or_default(),
        patient_local_id: None,
        prescriber: PractitionerRef {
            id: prescriber_id,
            name: body
                .pointer("/requester/display")
                .and_then(Value::as_str)
                .map(str::to_owned),
            department: None,
        },
        issued_on: issued_on.unwrap_or(Date::from_days_since_epoch(0)),
        issued_on_at: "MedicationRequest.authoredOn",
        lines: line.into_iter().collect(),
        notes: body
            .pointer("/note/0/text")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// One medication line, or every problem with it.
fn medication_line(request: &Value, line_no: i32, at: &str) -> Result<MedicationLine, Vec<Issue>> {
    let mut issues = Vec::new();
    let codings: Vec<CodedConcept> = request
        .pointer("/medicationCodeableConcept/coding")
        .and_then(Value::as_array)
        .map(|codings| codings.iter().filter_map(coded).collect())
        .unwrap_or_default();
    let preferred = [HOT9, YJ]
        .iter()
        .find_map(|system| codings.iter().position(|c| c.system == *system))
        .or(if codings.is_empty() { None } else { Some(0) });
    let drug = preferred.map(|i| codings[i].clone());
    if drug.is_none() {
        issues.push(Issue::new(
            "required",
            format!("{at}.medicationCodeableConcept.coding"),
            "the drug needs a code (system and code), e.g. HOT9 or YJ",
        ));
    }
    let display = request
        .pointer("/medicationCodeableConcept/text")
        .and_then(Value::as_str);
    let drug = drug.map(|mut d| {
        if d.display.is_none() {
            d.display = display.map(str::to_owned);
        }
        d
    });
    let other_codes = codings
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != preferred)
        .map(|(_, c)| c.clone())
        .collect();

    let to_dispense = request
        .pointer("/dispenseRequest/quantity")
        .and_then(quantity);
    match &to_dispense {
        None => issues.push(Issue::new(
            "required",
            format!("{at}.dispenseRequest.quantity"),
            "the quantity to dispense (value and unit) is required",
        )),
        Some(q) if !lifecycle::plausible_quantity(q.value) => issues.push(Issue::new(
            "value",
            format!("{at}.dispenseRequest.quantity.value"),
            format!(
                "the quantity must be positive and at most {}, got {}",
                lifecycle::MAX_QUANTITY,
                q.value
            ),
        )),
        Some(_) => {}
    }
    let dosage = request.pointer("/dosageInstruction/0");
    let timing_text = dosage
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            dosage
                .and_then(|d| d.pointer("/timing/code/coding/0/display"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if timing_text.is_none() {
        issues.push(Issue::new(
            "required",
            format!("{at}.dosageInstruction[0].text"),
            "the dosage instruction text (how and when to take it) is required",
        ));
    }
    let days_supply = match request
        .pointer("/dispenseRequest/expectedSupplyDuration/value")
        .or_else(|| dosage.and_then(|d| d.pointer("/timing/repeat/boundsDuration/value")))
        .and_then(Value::as_f64)
    {
        None => None,
        // Whole days within the bound; anything else is refused rather than rounded or clamped.
        Some(days) if days.fract() == 0.0 && lifecycle::plausible_days_supply(days as i32) => {
            Some(days as i32)
        }
        Some(days) => {
            issues.push(Issue::new(
                "value",
                format!("{at}.dispenseRequest.expectedSupplyDuration.value"),
                format!(
                    "days supply must be a whole number of days from 1 to {}, got {days}",
                    lifecycle::MAX_DAYS_SUPPLY
                ),
            ));
            None
        }
    };
    let (Some(drug), Some(to_dispense), Some(timing_text), true) =
        (drug, to_dispense, timing_text, issues.is_empty())
    else {
        return Err(issues);
    };
    let substitution_refused = request
        .pointer("/substitution/allowedCodeableConcept/coding")
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(SUBSTITUTION_NOT_ALLOWED)
                    && c.get("code").and_then(Value::as_str) == Some("1")
            })
        })
        || request
            .pointer("/substitution/allowedBoolean")
            .and_then(Value::as_bool)
            == Some(false);
    let rp_group = request
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter()
                .find(|id| id.get("system").and_then(Value::as_str) == Some(RP_NUMBER))
        })
        .and_then(|id| id.get("value").and_then(Value::as_str))
        .and_then(|v| v.parse().ok());
    Ok(MedicationLine {
        line_no,
        rp_group,
        drug,
        other_codes,
        dose_per_administration: dosage
            .and_then(|d| d.pointer("/doseAndRate/0/doseQuantity"))
            .and_then(quantity),
        dose_per_day: dosage
            .and_then(|d| d.pointer("/doseAndRate/0/rateRatio/numerator"))
            .and_then(quantity),
        route: dosage
            .and_then(|d| d.pointer("/route/coding/0"))
            .and_then(coded),
        timing_text,
        timing_code: dosage
            .and_then(|d| d.pointer("/timing/code/coding/0"))
            .and_then(coded),
        days_supply,
        quantity: to_dispense,
        generic_substitution_allowed: !substitution_refused,
        instructions: request
            .pointer("/note/0/text")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Bundle entries by resource type and by the references that point at them.
struct Resources<'a> {
    entries: Vec<(usize, &'a Value)>,
    by_reference: HashMap<String, &'a Value>,
    /// Entries that repeat an earlier one (same `fullUrl`, same type and id, or the same
    /// resource): each would otherwise become an extra medication line or be silently ignored.
    duplicates: Vec<Issue>,
}

impl<'a> Resources<'a> {
    fn index(entries: &'a [Value]) -> Self {
        let mut by_reference = HashMap::new();
        let mut list = Vec::new();
        let mut duplicates = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            let at = format!("Bundle.entry[{i}]");
            // The entries are bounded (MAX_ENTRIES), so comparing with each earlier one is cheap;
            // it catches a repeat that has no fullUrl or id to give it away.
            let mut repeated = list.iter().any(|(_, earlier)| *earlier == resource);
            if let Some(url) = entry.get("fullUrl").and_then(Value::as_str) {
                repeated |= by_reference.insert(url.to_owned(), resource).is_some();
            }
            if let (Some(kind), Some(id)) = (
                resource.get("resourceType").and_then(Value::as_str),
                resource.get("id").and_then(Value::as_str),
            ) {
                repeated |= by_reference
                    .insert(format!("{kind}/{id}"), resource)
                    .is_some();
            }
            if repeated {
                duplicates.push(Issue::new(
                    "value",
                    at,
                    "this entry repeats an earlier one (same fullUrl, id or content); send each resource once",
                ));
                continue;
            }
            list.push((i, resource));
        }
        Self {
            entries: list,
            by_reference,
            duplicates,
        }
    }

    fn all(&self, kind: &'a str) -> impl Iterator<Item = (usize, &'a Value)> + '_ {
        self.entries
            .iter()
            .copied()
            .filter(move |(_, r)| r.get("resourceType").and_then(Value::as_str) == Some(kind))
    }

    fn first(&self, kind: &'a str) -> Option<(usize, &'a Value)> {
        self.all(kind).next()
    }

    fn resolve(&self, reference: Option<&Value>) -> Option<&'a Value> {
        let reference = reference?.get("reference")?.as_str()?;
        self.by_reference.get(reference).copied()
    }
}

/// The cross-institution patient reference (insurance card) or the issuer-local one.
fn patient_reference(patient: &Value, resources: &Resources<'_>, org_id: &str) -> Option<String> {
    let insured = resources.all("Coverage").find_map(|(_, coverage)| {
        let payer = resources.resolve(coverage.pointer("/payor/0"))?;
        identity::insured(coverage, payer).map(|i| i.patient_ref)
    });
    insured.or_else(|| {
        let value = patient
            .pointer("/identifier/0/value")
            .and_then(Value::as_str)?;
        Some(identity::local_ref(org_id, value))
    })
}

fn practitioner(resource: &Value) -> PractitionerRef {
    let id = resource
        .pointer("/identifier/0/value")
        .or_else(|| resource.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    // The ideographic name (IDE) when the profile marks one, else the first.
    let names = resource.get("name").and_then(Value::as_array);
    let name = names
        .and_then(|names| {
            names
                .iter()
                .find(|n| {
                    n.pointer("/extension/0/valueCode").and_then(Value::as_str) == Some("IDE")
                })
                .or_else(|| names.first())
        })
        .and_then(|n| n.get("text").and_then(Value::as_str))
        .map(str::to_owned);
    PractitionerRef {
        id,
        name,
        department: None,
    }
}

fn has_type(resource: &Value, code: &str) -> bool {
    resource
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|types| {
            types
                .iter()
                .any(|t| t.pointer("/coding/0/code").and_then(Value::as_str) == Some(code))
        })
}

fn identifier_key(identifier: Option<&Value>) -> Option<String> {
    let identifier = identifier?;
    let value = identifier.get("value").and_then(Value::as_str)?;
    let system = identifier
        .get("system")
        .and_then(Value::as_str)
        .unwrap_or("");
    (!value.is_empty()).then(|| format!("{system}|{value}"))
}

fn coded(coding: &Value) -> Option<CodedConcept> {
    let code = coding.get("code").and_then(Value::as_str)?;
    Some(CodedConcept::new(
        coding.get("system").and_then(Value::as_str).unwrap_or(""),
        code,
        coding.get("display").and_then(Value::as_str),
    ))
}

fn quantity(q: &Value) -> Option<Quantity> {
    let value = q.get("value").and_then(Value::as_f64)?;
    let unit = q
        .get("unit")
        .or_else(|| q.get("code"))
        .and_then(Value::as_str)?;
    Some(Quantity {
        value,
        unit: unit.to_owned(),
        unit_system: q.get("system").and_then(Value::as_str).map(str::to_owned),
        unit_code: q.get("code").and_then(Value::as_str).map(str::to_owned),
    })
}

/// `YYYY-MM-DD` or a dateTime; the date as written (the clinic's local date).
fn parse_date(text: &str) -> Option<Date> {
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d")
        .ok()
        .map(Date::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = include_str!(
        "../../../tests/fixtures/fhir/jp-eprescription/Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json"
    );
    const NAIHUKU: &str = include_str!(
        "../../../tests/fixtures/fhir/jp-eprescription/MedicationRequest-JP-MedReq-ePreData-Example-naihuku.json"
    );

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_jp_example_bundle_maps_to_one_prescription_with_both_lines() {
        let s = read_bundle(&json(BUNDLE), "clinic-daiichi").unwrap();
        assert_eq!(
            s.identifier,
            "urn:ietf:rfc:3986|urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
        );
        // Identified by the insurance card (insurer 06123456, symbol 12345, full-width number).
        assert_eq!(s.patient_ref, "jp-insured:06123456:12345:67890:01");
        assert_eq!(s.prescriber.name.as_deref(), Some("神奈川　花子"));
        assert_eq!(s.prescriber.department.as_deref(), Some("内科"));
        assert_eq!(s.issued_on, Date::from_ymd(2020, 8, 21).unwrap());
        assert_eq!(s.lines.len(), 2);
        // The Patient's gender travels with the insurance data (for statistics only).
        assert_eq!(
            s.coverage.as_ref().and_then(|c| c.sex),
            Some(AdministrativeSex::Male)
        );

        let oral = &s.lines[0];
        assert_eq!(oral.drug.system, HOT9);
        assert_eq!(oral.drug.code, "103831601");
        assert_eq!(
            oral.drug.display.as_deref(),
            Some("カルボシステイン錠２５０ｍｇ")
        );
        assert_eq!(oral.other_codes[0].code, "2233002F1280");
        assert_eq!(
            oral.timing_text,
            "内服・経口・１日３回朝昼夕食後　１回１錠　７日分"
        );
        assert_eq!(oral.timing_code.as_ref().unwrap().code, "1013044400000000");
        assert_eq!(oral.days_supply, Some(7));
        assert_eq!(
            (oral.quantity.value, oral.quantity.unit.as_str()),
            (21.0, "錠")
        );
        assert_eq!(oral.dose_per_administration.as_ref().unwrap().value, 1.0);
        assert_eq!(oral.dose_per_day.as_ref().unwrap().value, 3.0);
        assert_eq!(oral.route.as_ref().unwrap().code, "PO");
        assert!(!oral.generic_substitution_allowed, "変更不可");
        assert_eq!(oral.rp_group, Some(1));

        let drops = &s.lines[1];
        assert_eq!(drops.drug.code, "102094601");
        assert_eq!(drops.days_supply, None, "eye drops have no days supply");
        assert_eq!(
            (drops.quantity.value, drops.quantity.unit.as_str()),
            (2.0, "本")
        );
    }

    #[test]
    fn a_single_medication_request_is_a_one_line_prescription_for_a_local_patient() {
        let s = read_medication_request(&json(NAIHUKU), "clinic-daiichi").unwrap();
        assert_eq!(
            s.patient_ref,
            "local:clinic-daiichi:JP-Patient-ePreData-Example"
        );
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.lines[0].drug.code, "103831601");
        assert_eq!(s.identifier, "urn:oid:1.2.392.100495.20.3.81|1");
    }

    #[test]
    fn every_problem_is_reported_with_where_it_is() {
        let mut bundle = json(BUNDLE);
        let entries = bundle["entry"].as_array_mut().unwrap();
        let first_request = entries
            .iter()
            .position(|e| e["resource"]["resourceType"] == "MedicationRequest")
            .unwrap();
        let request = &mut entries[first_request]["resource"];
        request["medicationCodeableConcept"]["coding"] = serde_json::json!([]);
        request["dispenseRequest"]
            .as_object_mut()
            .unwrap()
            .remove("quantity");
        bundle.as_object_mut().unwrap().remove("identifier");
        let issues = read_bundle(&bundle, "clinic-daiichi").unwrap_err();
        let at: Vec<&str> = issues.iter().map(|i| i.expression.as_str()).collect();
        assert!(at.contains(&"Bundle.identifier"), "{at:?}");
        let prefix = format!("Bundle.entry[{first_request}].resource");
        assert!(
            at.contains(&format!("{prefix}.medicationCodeableConcept.coding").as_str()),
            "{at:?}"
        );
        assert!(
            at.contains(&format!("{prefix}.dispenseRequest.quantity").as_str()),
            "{at:?}"
        );
        assert_eq!(issues.len(), 3, "{issues:#?}");
    }

    #[test]
    fn the_wrong_resource_is_a_structure_problem() {
        let patient = serde_json::json!({"resourceType": "Patient", "id": "x"});
        let issues = read_bundle(&patient, "c").unwrap_err();
        assert_eq!(issues[0].code, "structure");
        assert!(issues[0].diagnostics.contains("expected a Bundle"));
        let issues = read_medication_request(&patient, "c").unwrap_err();
        assert_eq!(issues[0].code, "structure");
    }

    #[test]
    fn full_width_insurance_numbers_give_the_same_patient() {
        assert_eq!(
            identity::insured_ref("06123456", "", "６７８９０", "01"),
            identity::insured_ref("06123456", "", "67 890", "01")
        );
    }
}
