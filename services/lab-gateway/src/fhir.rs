//! FHIR R4 lab results (JP Core `JP_Observation_LabResult` / `JP_DiagnosticReport_LabResult`,
//! JP-CLINS `JP_Observation_LabResult_eCS`) read into the same [`LabReport`] as an HL7 v2
//! message: one `Observation`, one `DiagnosticReport` with its Observations (contained or in the
//! Bundle), or a `Bundle` of them. Every problem found is reported at once, each with where it
//! is. Mapping tables: docs/labs.md.

use std::collections::HashMap;

use hixbus_contracts::identity;
use hixbus_contracts::{
    CodedConcept, Interpretation, Observation, ReferenceRange, ReportStatus, Timestamp, systems,
};
use hixbus_service::fhir::Issue;
use serde_json::Value;

use crate::hl7::{LabReport, MAX_RESULTS, PatientId};

/// JLAC10 as JP-CLINS and MEDIS name it; written as [`systems::JLAC10`].
const JLAC10_ALIASES: &[&str] = &[
    systems::JLAC10,
    "http://medis.or.jp/CodeSystem/master-JLAC10-17digits",
    "http://jpfhir.jp/fhir/clins/CodeSystem/JLAC10/JP_CLINS_ObsLabResult_CoreLabo_CS",
];
/// JLAC11 (the successor code), by MEDIS' name.
const JLAC11: &str = "http://medis.or.jp/CodeSystem/master-JLAC11";
/// The institution the results are from (JP-CLINS): the ordering institution.
const INSTITUTION_NUMBER: &str =
    "http://jpfhir.jp/fhir/clins/Extension/StructureDefinition/JP_eCS_InstitutionNumber";

/// The code system a coding is written in on the bus.
fn system(name: &str) -> &str {
    if JLAC10_ALIASES.contains(&name) {
        systems::JLAC10
    } else {
        name
    }
}

/// Standard code systems: a result coded only in these lacks the laboratory's own code.
fn is_standard(system: &str) -> bool {
    matches!(
        system,
        systems::JLAC10 | systems::LOINC | systems::SNOMED_CT
    ) || system == JLAC11
}

/// The resources of a request by every name a reference may use: `#id` for contained ones,
/// `Type/id` and the entry's `fullUrl` in a Bundle.
pub(crate) struct Resources<'a> {
    by_ref: HashMap<String, &'a Value>,
}

impl<'a> Resources<'a> {
    pub(crate) fn of(body: &'a Value) -> Self {
        let mut by_ref = HashMap::new();
        let mut add = |resource: &'a Value, full_url: Option<&str>| {
            if let Some(url) = full_url {
                by_ref.insert(url.to_owned(), resource);
            }
            if let (Some(kind), Some(id)) =
                (str_at(resource, "/resourceType"), str_at(resource, "/id"))
            {
                by_ref.insert(format!("{kind}/{id}"), resource);
            }
            for contained in array_at(resource, "/contained") {
                if let Some(id) = str_at(contained, "/id") {
                    by_ref.insert(format!("#{id}"), contained);
                }
            }
        };
        add(body, None);
        for entry in array_at(body, "/entry") {
            if let Some(resource) = entry.get("resource") {
                add(resource, str_at(entry, "/fullUrl"));
            }
        }
        Self { by_ref }
    }

    pub(crate) fn resolve(&self, reference: Option<&Value>) -> Option<&'a Value> {
        let reference = reference?.get("reference")?.as_str()?;
        self.by_ref.get(reference).copied()
    }
}

pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(crate) fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Reads one request into a report.
pub fn read(body: &Value) -> Result<LabReport, Vec<Issue>> {
    let resources = Resources::of(body);
    match str_at(body, "/resourceType") {
        Some("Observation") => report(body, None, vec![("Observation", body)], &resources),
        Some("DiagnosticReport") => {
            let results = report_results(body, "DiagnosticReport", &resources)?;
            report(body, Some(body), results, &resources)
        }
        Some("Bundle") => bundle(body, &resources),
        other => Err(vec![Issue::new(
            "structure",
            "resourceType",
            format!(
                "expected an Observation, a DiagnosticReport or a Bundle, got {}",
                other.unwrap_or("no resourceType")
            ),
        )]),
    }
}

/// The Observations a DiagnosticReport lists in `result`, each resolved.
fn report_results<'a>(
    report: &'a Value,
    at: &str,
    resources: &Resources<'a>,
) -> Result<Vec<(String, &'a Value)>, Vec<Issue>> {
    let listed = array_at(report, "/result");
    if listed.is_empty() {
        return Err(vec![Issue::new(
            "required",
            format!("{at}.result"),
            "a DiagnosticReport must list its Observations in result",
        )]);
    }
    let mut found = Vec::new();
    let mut issues = Vec::new();
    for (i, reference) in listed.iter().enumerate() {
        match resources.resolve(Some(reference)) {
            Some(o) if str_at(o, "/resourceType") == Some("Observation") => {
                found.push((format!("{at}.result[{i}]"), o));
            }
            _ => issues.push(Issue::new(
                "not-found",
                format!("{at}.result[{i}]"),
                "the reference names no Observation contained in the report or in the Bundle",
            )),
        }
    }
    if issues.is_empty() {
        Ok(found)
    } else {
        Err(issues)
    }
}

fn bundle<'a>(body: &'a Value, resources: &Resources<'a>) -> Result<LabReport, Vec<Issue>> {
    if !matches!(
        str_at(body, "/type"),
        Some("collection" | "transaction" | "batch" | "message" | "document")
    ) {
        return Err(vec![Issue::new(
            "value",
            "Bundle.type",
            "a lab Bundle is a collection, transaction, batch, message or document",
        )]);
    }
    let entries = array_at(body, "/entry");
    let of_kind = |kind: &str| {
        entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.get("resource").map(|r| (i, r)))
            .filter(|(_, r)| str_at(r, "/resourceType") == Some(kind))
            .collect::<Vec<_>>()
    };
    let reports = of_kind("DiagnosticReport");
    match reports.as_slice() {
        [] => {
            let observations: Vec<(String, &Value)> = of_kind("Observation")
                .into_iter()
                .map(|(i, o)| (format!("Bundle.entry[{i}].resource"), o))
                .collect();
            if observations.is_empty() {
                return Err(vec![Issue::new(
                    "required",
                    "Bundle.entry",
                    "the Bundle holds no DiagnosticReport and no Observation",
                )]);
            }
            report(body, None, observations, resources)
        }
        [(i, diagnostic)] => {
            let at = format!("Bundle.entry[{i}].resource");
            let results = report_results(diagnostic, &at, resources)?;
            report(body, Some(diagnostic), results, resources)
        }
        _ => Err(vec![Issue::new(
            "not-supported",
            "Bundle.entry",
            "one DiagnosticReport per request: send each report on its own",
        )]),
    }
}

/// The report of `observations`, described by `diagnostic` when there is one, else by `body`
/// (a single Observation, or a Bundle of them).
fn report(
    body: &Value,
    diagnostic: Option<&Value>,
    observations: Vec<(impl AsRef<str>, &Value)>,
    resources: &Resources<'_>,
) -> Result<LabReport, Vec<Issue>> {
    let mut issues = Vec::new();
    if observations.len() > MAX_RESULTS {
        return Err(vec![Issue::new(
            "too-costly",
            "$",
            format!("at most {MAX_RESULTS} results per report"),
        )]);
    }
    let mut results = Vec::with_capacity(observations.len());
    let mut statuses = Vec::new();
    for (at, o) in &observations {
        let at = at.as_ref();
        match observation(o, at, Profile::LabResult) {
            Ok(result) => results.push(result),
            Err(mut problems) => issues.append(&mut problems),
        }
        statuses.push(str_at(o, "/status").unwrap_or(""));
    }
    let first = observations.first().map(|(_, o)| *o);
    let describing = diagnostic.or(first).unwrap_or(body);
    let root = str_at(body, "/resourceType").unwrap_or("$");
    // Where the report's own fields are read from, for the problems' locations.
    let describing_at = if diagnostic.is_some() {
        "DiagnosticReport"
    } else {
        "Observation"
    };

    let patient = patient(describing, resources);
    if patient.is_none() {
        issues.push(Issue::new(
            "required",
            format!("{describing_at}.subject"),
            "the patient is required: a reference to the Patient (with an identifier) or an identifier",
        ));
    }
    let report_id = [
        diagnostic.and_then(|d| str_at(d, "/identifier/0/value")),
        diagnostic.and_then(|d| str_at(d, "/id")),
        (root == "Bundle")
            .then(|| str_at(body, "/identifier/value"))
            .flatten(),
        (root == "Bundle").then(|| str_at(body, "/id")).flatten(),
        first.and_then(|o| str_at(o, "/identifier/0/value")),
        first.and_then(|o| str_at(o, "/id")),
    ]
    .into_iter()
    .flatten()
    .next()
    .map(str::to_owned);
    if report_id.is_none() {
        issues.push(Issue::new(
            "required",
            format!("{describing_at}.identifier"),
            "the report needs an identifier (or an id) for corrections to find it",
        ));
    }
    let order_id = order(describing, resources);
    let status = match diagnostic.and_then(|d| str_at(d, "/status")) {
        Some(s) => report_status(s).ok_or_else(|| {
            Issue::new(
                "value",
                "DiagnosticReport.status",
                format!("{s:?} is not a report status"),
            )
        }),
        None => Ok(derived_status(&statuses)),
    };
    let status = status.unwrap_or_else(|issue| {
        issues.push(issue);
        ReportStatus::Final
    });
    let (specimen_id, specimen_type, collected) = specimen(describing, first, resources);
    let collected_at = collected.and_then(|c| {
        chrono::DateTime::parse_from_rfc3339(c)
            .ok()
            .map(|t| Timestamp::from(t.with_timezone(&chrono::Utc)))
    });
    if collected_at.is_none() {
        issues.push(Issue::new(
            "required",
            format!("{describing_at}.effectiveDateTime"),
            "when the specimen was collected is required (Specimen.collection.collectedDateTime, effectiveDateTime or issued, with a time zone)",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let mut report_id = report_id.unwrap_or_default();
    if root == "Observation" {
        // A single Observation is a report of its own. Senders reuse one identifier for
        // several results (JP-CLINS' own examples do), so its test's code is part of its id: a
        // correction keeps both.
        report_id = format!("{report_id}:{}", results[0].code.code);
    }
    Ok(LabReport {
        patient: patient.unwrap_or(PatientId::Local(String::new())),
        order_id: order_id.unwrap_or_else(|| report_id.clone()),
        report_id,
        ordering_facility: ordering(describing, resources),
        status,
        specimen_id,
        specimen_type,
        collected_at: collected_at.unwrap_or_else(Timestamp::now),
        results,
    })
}

/// The patient as the sender names it: by insurance when JP-CLINS' member id is given (the
/// cross-institution reference, never the raw number), else the Patient's first identifier,
/// else its id.
fn patient(resource: &Value, resources: &Resources<'_>) -> Option<PatientId> {
    let subject = resource.get("subject")?;
    let insured = |id: &Value| {
        (str_at(id, "/system") == Some(identity::CLINS_MEMBER_ID))
            .then(|| str_at(id, "/value").and_then(identity::member_id_ref))
            .flatten()
            .map(PatientId::Insured)
    };
    if let Some(id) = subject.get("identifier") {
        return insured(id).or_else(|| {
            (str_at(id, "/system") != Some(identity::CLINS_MEMBER_ID))
                .then(|| str_at(id, "/value"))
                .flatten()
                .map(|v| PatientId::Local(v.to_owned()))
        });
    }
    if let Some(patient) = resources.resolve(Some(subject)) {
        let ids = array_at(patient, "/identifier");
        return ids.iter().find_map(insured).or_else(|| {
            ids.iter()
                .filter(|id| str_at(id, "/system") != Some(identity::CLINS_MEMBER_ID))
                .find_map(|id| str_at(id, "/value"))
                .or_else(|| str_at(patient, "/id"))
                .map(|v| PatientId::Local(v.to_owned()))
        });
    }
    // A reference to a Patient the request does not hold: the sender's own id of it.
    str_at(subject, "/reference")?
        .strip_prefix("Patient/")
        .filter(|id| !id.is_empty())
        .map(|id| PatientId::Local(id.to_owned()))
}

/// The placer order number: the ServiceRequest the results are `basedOn` (its identifier, else
/// its id, else the reference's identifier).
fn order(resource: &Value, resources: &Resources<'_>) -> Option<String> {
    let based_on = array_at(resource, "/basedOn").first()?;
    if let Some(request) = resources.resolve(Some(based_on)) {
        return str_at(request, "/identifier/0/value")
            .or_else(|| str_at(request, "/id"))
            .map(str::to_owned);
    }
    str_at(based_on, "/identifier/value").map(str::to_owned)
}

/// Who ordered: the requester of the ServiceRequest the results are based on (an Organization's
/// institution number or id, or the reference's identifier), else JP-CLINS' institution number.
fn ordering(resource: &Value, resources: &Resources<'_>) -> Option<String> {
    let requester = array_at(resource, "/basedOn")
        .first()
        .and_then(|b| resources.resolve(Some(b)))
        .and_then(|request| request.get("requester"));
    if let Some(requester) = requester {
        let organization = resources
            .resolve(Some(requester))
            .filter(|r| str_at(r, "/resourceType") == Some("Organization"));
        if let Some(named) =
            organization.and_then(|o| str_at(o, "/identifier/0/value").or_else(|| str_at(o, "/id")))
        {
            return Some(named.to_owned());
        }
        if let Some(named) = str_at(requester, "/identifier/value") {
            return Some(named.to_owned());
        }
    }
    array_at(resource, "/extension")
        .iter()
        .find(|e| str_at(e, "/url") == Some(INSTITUTION_NUMBER))
        .and_then(|e| str_at(e, "/valueIdentifier/value"))
        .map(str::to_owned)
}

/// The specimen's id, type and collection time: from the Specimen referenced (contained or in
/// the Bundle), else the reference's display; the time from the Specimen, else the result's
/// `effectiveDateTime`, else `issued`.
fn specimen<'a>(
    describing: &'a Value,
    first: Option<&'a Value>,
    resources: &Resources<'a>,
) -> (Option<String>, CodedConcept, Option<&'a str>) {
    let holder = [Some(describing), first]
        .into_iter()
        .flatten()
        .find(|r| r.get("specimen").is_some());
    let reference = holder.and_then(|h| {
        h.get("specimen")
            .map(|s| s.as_array().and_then(|a| a.first()).unwrap_or(s))
    });
    let resource = resources.resolve(reference);
    let id = resource
        .and_then(|s| str_at(s, "/identifier/0/value").or_else(|| str_at(s, "/id")))
        .map(str::to_owned);
    let kind = resource
        .and_then(|s| s.get("type"))
        .and_then(concept)
        .or_else(|| {
            reference
                .and_then(|r| str_at(r, "/display"))
                .map(|d| CodedConcept::new("urn:hixbus:fhir:specimen-display", d, Some(d)))
        })
        .unwrap_or_else(|| {
            CodedConcept::new(
                "http://terminology.hl7.org/CodeSystem/v2-0487",
                "UNK",
                Some("unknown"),
            )
        });
    let collected = resource
        .and_then(|s| str_at(s, "/collection/collectedDateTime"))
        .or_else(|| str_at(describing, "/effectiveDateTime"))
        .or_else(|| first.and_then(|o| str_at(o, "/effectiveDateTime")))
        .or_else(|| str_at(describing, "/issued"))
        .or_else(|| first.and_then(|o| str_at(o, "/issued")));
    (id, kind, collected)
}

/// The first coding of a CodeableConcept (its text as the display when the coding has none).
pub(crate) fn concept(value: &Value) -> Option<CodedConcept> {
    let coding = array_at(value, "/coding").first()?;
    let code = str_at(coding, "/code")?;
    Some(CodedConcept::new(
        system(str_at(coding, "/system").unwrap_or("urn:hixbus:fhir:unnamed")),
        code,
        str_at(coding, "/display").or_else(|| str_at(value, "/text")),
    ))
}

/// What an Observation must carry besides a status, a code and a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// A lab result: category laboratory, and the laboratory's own code beside any standard one.
    LabResult,
    /// A checkup item: coded in the checkup code table, any category.
    CheckupItem,
}

pub(crate) fn observation(
    o: &Value,
    at: &str,
    profile: Profile,
) -> Result<Observation, Vec<Issue>> {
    let mut issues = Vec::new();
    let status = str_at(o, "/status");
    if !matches!(
        status,
        Some(
            "registered"
                | "preliminary"
                | "final"
                | "amended"
                | "corrected"
                | "cancelled"
                | "entered-in-error"
        )
    ) {
        issues.push(Issue::new(
            "value",
            format!("{at}.status"),
            "an Observation's status is required (final, preliminary, corrected, amended, cancelled, entered-in-error)",
        ));
    }
    let laboratory = array_at(o, "/category")
        .iter()
        .flat_map(|c| array_at(c, "/coding"))
        .any(|c| str_at(c, "/code") == Some("laboratory"));
    if profile == Profile::LabResult && !laboratory {
        issues.push(Issue::new(
            "value",
            format!("{at}.category"),
            "a lab result has the category laboratory",
        ));
    }
    let text = str_at(o, "/code/text");
    let codings: Vec<CodedConcept> = array_at(o, "/code/coding")
        .iter()
        .filter_map(|c| {
            Some(CodedConcept::new(
                system(str_at(c, "/system")?),
                str_at(c, "/code")?,
                str_at(c, "/display").or(text),
            ))
        })
        .collect();
    if codings.is_empty() {
        issues.push(Issue::new(
            "required",
            format!("{at}.code.coding"),
            "the test's code (with its system) is required",
        ));
    } else if profile == Profile::LabResult && codings.iter().all(|c| is_standard(&c.system)) {
        issues.push(Issue::new(
            "required",
            format!("{at}.code.coding"),
            "the laboratory's own code for the test is required beside JLAC10/LOINC (JP Core and JP-CLINS require the local code)",
        ));
    }
    let withdrawn = matches!(status, Some("cancelled" | "entered-in-error"));
    let mut result = Observation {
        code: CodedConcept::new("", "", None),
        value_numeric: None,
        value_coded: None,
        value_text: None,
        unit: None,
        reference_range: reference_range(o),
        interpretation: interpretation(o),
        other_codes: Vec::new(),
    };
    if withdrawn {
    } else if let Some(q) = o.get("valueQuantity") {
        match q.get("value").and_then(Value::as_f64) {
            Some(v) if v.is_finite() => result.value_numeric = Some(v),
            _ => issues.push(Issue::new(
                "value",
                format!("{at}.valueQuantity.value"),
                "a quantity needs a numeric value",
            )),
        }
        result.unit = str_at(q, "/unit")
            .or_else(|| str_at(q, "/code"))
            .map(str::to_owned);
    } else if let Some(c) = o.get("valueCodeableConcept") {
        result.value_coded = concept(c);
        result.value_text = str_at(c, "/text").map(str::to_owned);
        if result.value_coded.is_none() && result.value_text.is_none() {
            issues.push(Issue::new(
                "value",
                format!("{at}.valueCodeableConcept"),
                "a coded value needs a coding or a text",
            ));
        }
    } else if let Some(s) = str_at(o, "/valueString") {
        result.value_text = Some(s.to_owned());
    } else if let Some(n) = o.get("valueInteger").and_then(Value::as_i64) {
        result.value_numeric = Some(n as f64);
    } else if let Some(b) = o.get("valueBoolean").and_then(Value::as_bool) {
        result.value_text = Some(b.to_string());
    } else if o.get("dataAbsentReason").is_none()
        && matches!(status, Some("final" | "amended" | "corrected"))
    {
        issues.push(Issue::new(
            "required",
            format!("{at}.value[x]"),
            "a final result needs a value (valueQuantity, valueCodeableConcept, valueString…) or a dataAbsentReason",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    // The standard code goes first (JLAC10, then LOINC), so every consumer finds the test by
    // it; every other code is kept beside it.
    let primary = codings
        .iter()
        .position(|c| c.system == systems::JLAC10)
        .or_else(|| codings.iter().position(|c| c.system == systems::LOINC))
        .unwrap_or(0);
    let mut codings = codings;
    result.code = codings.remove(primary);
    for c in codings {
        let duplicate = (c.system == result.code.system && c.code == result.code.code)
            || result
                .other_codes
                .iter()
                .any(|o| o.system == c.system && o.code == c.code);
        if !duplicate {
            result.other_codes.push(c);
        }
    }
    Ok(result)
}

fn reference_range(o: &Value) -> Option<ReferenceRange> {
    let range = array_at(o, "/referenceRange").first()?;
    let low = range.pointer("/low/value").and_then(Value::as_f64);
    let high = range.pointer("/high/value").and_then(Value::as_f64);
    let text = str_at(range, "/text").map(str::to_owned).or_else(|| {
        let shown = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        (low.is_some() || high.is_some()).then(|| format!("{}-{}", shown(low), shown(high)))
    });
    Some(ReferenceRange { low, high, text })
}

/// FHIR's interpretation codes (v3 ObservationInterpretation, the same letters as HL7 v2's
/// table 0078).
fn interpretation(o: &Value) -> Interpretation {
    let code = array_at(o, "/interpretation")
        .iter()
        .flat_map(|c| array_at(c, "/coding"))
        .find_map(|c| str_at(c, "/code"));
    match code {
        Some("N") => Interpretation::Normal,
        Some("L") => Interpretation::Low,
        Some("H") => Interpretation::High,
        Some("LL") => Interpretation::CriticallyLow,
        Some("HH") => Interpretation::CriticallyHigh,
        Some("A" | "AA") => Interpretation::Abnormal,
        Some("POS") => Interpretation::Positive,
        Some("NEG") => Interpretation::Negative,
        _ => Interpretation::Unknown,
    }
}

/// DiagnosticReport.status.
fn report_status(status: &str) -> Option<ReportStatus> {
    Some(match status {
        "final" => ReportStatus::Final,
        "registered" | "partial" | "preliminary" => ReportStatus::Preliminary,
        "amended" | "corrected" | "appended" => ReportStatus::Corrected,
        "cancelled" | "entered-in-error" => ReportStatus::Cancelled,
        _ => return None,
    })
}

/// The report's status from its Observations': any corrected makes it corrected; all
/// withdrawn, cancelled; any preliminary, preliminary.
fn derived_status(statuses: &[&str]) -> ReportStatus {
    if statuses
        .iter()
        .any(|s| matches!(*s, "corrected" | "amended"))
    {
        ReportStatus::Corrected
    } else if !statuses.is_empty()
        && statuses
            .iter()
            .all(|s| matches!(*s, "cancelled" | "entered-in-error"))
    {
        ReportStatus::Cancelled
    } else if statuses
        .iter()
        .any(|s| matches!(*s, "registered" | "preliminary"))
    {
        ReportStatus::Preliminary
    } else {
        ReportStatus::Final
    }
}
