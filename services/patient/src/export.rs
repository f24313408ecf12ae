//! The whole record as one FHIR R4 `Bundle` (type `collection`), so a patient can take it to
//! any system that reads FHIR: Patient, MedicationRequest (one per prescribed line),
//! MedicationDispense, DetectedIssue (the safety alerts), DiagnosticReport and Observation
//! (results and checkups), Coverage, Claim and ClaimResponse, Consent, and AuditEvent (this service's
//! record of who read the record). Resource ids are derived from the entries, so the same
//! record exports the same resources (after a rebuild too); only the Bundle's timestamp moves.

use std::collections::BTreeMap;

use hixbus_contracts::{
    AlertSeverity, ClaimOutcome, CodedConcept, ConsentChanged, ConsentDecision, Coverage,
    Interpretation, Observation, PurposeOfUse, ReportStatus,
};
use hixbus_storage::AuditEntry;
use serde_json::{Value, json};

use crate::record::{enum_text, local_time};
use crate::store::{Entry, Fact};

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6869_7862_7573_2d70_6174_6965_6e74_0001);
/// How the export names the patient's cross-institution reference.
pub const PATIENT_REF_SYSTEM: &str = "urn:hixbus:patient-ref";
const PRESCRIPTION_SYSTEM: &str = "urn:hixbus:prescription-id";

fn id(kind: &str, key: &str) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, format!("{kind}/{key}").as_bytes()).to_string()
}

fn reference(id: &str) -> Value {
    json!({"reference": format!("urn:uuid:{id}")})
}

fn codeable(c: &CodedConcept) -> Value {
    let mut coding = json!({"system": c.system, "code": c.code});
    if let Some(display) = &c.display {
        coding["display"] = json!(display);
    }
    json!({"coding": [coding], "text": c.display.as_deref().unwrap_or(&c.code)})
}

fn money(yen: i64) -> Value {
    json!({"value": yen, "currency": "JPY"})
}

fn date(d: hixbus_contracts::time::Date) -> String {
    d.to_string()
}

fn observation_status(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Preliminary => "preliminary",
        ReportStatus::Final => "final",
        ReportStatus::Corrected => "corrected",
        ReportStatus::Cancelled => "cancelled",
    }
}

fn interpretation(i: Interpretation) -> Option<(&'static str, &'static str)> {
    Some(match i {
        Interpretation::Unknown => return None,
        Interpretation::Normal => ("N", "Normal"),
        Interpretation::Low => ("L", "Low"),
        Interpretation::High => ("H", "High"),
        Interpretation::CriticallyLow => ("LL", "Critical low"),
        Interpretation::CriticallyHigh => ("HH", "Critical high"),
        Interpretation::Abnormal => ("A", "Abnormal"),
        Interpretation::Positive => ("POS", "Positive"),
        Interpretation::Negative => ("NEG", "Negative"),
    })
}

fn observation(
    o: &Observation,
    oid: &str,
    patient: &str,
    status: &str,
    category: &str,
    effective: &str,
) -> Value {
    let mut r = json!({
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": codeable(&o.code),
        "subject": reference(patient),
        "effectiveDateTime": effective,
    });
    match (&o.value_numeric, &o.value_coded, &o.value_text) {
        (Some(n), _, _) => {
            let mut q = json!({"value": n});
            if let Some(unit) = &o.unit {
                q["unit"] = json!(unit);
            }
            r["valueQuantity"] = q;
        }
        (None, Some(c), _) => r["valueCodeableConcept"] = codeable(c),
        (None, None, Some(t)) => r["valueString"] = json!(t),
        (None, None, None) => {
            r["dataAbsentReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}]});
        }
    }
    if let Some(range) = &o.reference_range {
        let mut rr = json!({});
        let bound = |v: f64| {
            let mut q = json!({"value": v});
            if let Some(unit) = &o.unit {
                q["unit"] = json!(unit);
            }
            q
        };
        if let Some(low) = range.low {
            rr["low"] = bound(low);
        }
        if let Some(high) = range.high {
            rr["high"] = bound(high);
        }
        if let Some(text) = &range.text {
            rr["text"] = json!(text);
        }
        if rr.as_object().is_some_and(|o| !o.is_empty()) {
            r["referenceRange"] = json!([rr]);
        }
    }
    if let Some((code, display)) = interpretation(o.interpretation) {
        r["interpretation"] = json!([{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": code, "display": display,
        }]}]);
    }
    r
}

fn coverage_resource(cid: &str, patient: &str, c: &Coverage) -> Value {
    let mut r = json!({
        "resourceType": "Coverage",
        "id": cid,
        "status": "active",
        "beneficiary": reference(patient),
        "payor": [{"identifier": {"system": hixbus_contracts::identity::INSURER_NUMBER, "value": c.insurer_number}}],
        "subscriberId": c.number,
    });
    if let Some(pct) = c.copay_percent {
        r["costToBeneficiary"] = json!([{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-copay-type", "code": "copaypct"}]},
            "valueQuantity": {"value": pct},
        }]);
    }
    r
}

fn claim_outcome(o: ClaimOutcome) -> &'static str {
    match o {
        ClaimOutcome::Pended => "queued",
        ClaimOutcome::Approved | ClaimOutcome::Denied | ClaimOutcome::Returned => "complete",
        ClaimOutcome::PartiallyApproved => "partial",
    }
}

/// Drops what FHIR forbids: empty strings, nulls, and the objects and arrays left empty (an
/// element is present with content or absent). A prescription line without timing text, say,
/// has no `dosageInstruction.text` rather than an empty one.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(items) => {
            items.retain_mut(prune);
            !items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|_, v| prune(v));
            !map.is_empty()
        }
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// A consent decision as FHIR: permit (granted) or deny (revoked, or a research opt-out), to
/// the institution for its purpose over the categories, for the period a visit consent has.
fn consent_resource(c: &ConsentChanged, patient: &str) -> Value {
    let purpose = match c.purpose {
        PurposeOfUse::Treatment => ("TREAT", "treatment"),
        PurposeOfUse::Dispensing => ("PATRQT", "patient requested (dispensing)"),
        PurposeOfUse::Payment => ("HPAYMT", "healthcare payment"),
        PurposeOfUse::Research => ("HRESCH", "healthcare research"),
        PurposeOfUse::PublicHealth => ("PUBHLTH", "public health"),
        PurposeOfUse::PatientAccess => ("PATADMIN", "patient administration"),
    };
    let mut provision = json!({
        "type": if c.decision == ConsentDecision::Granted { "permit" } else { "deny" },
        "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose.0, "display": purpose.1}],
        "class": c.scope.iter().map(|k| json!({
            "system": "urn:hixbus:data-category",
            "code": enum_text(k),
        })).collect::<Vec<_>>(),
    });
    if let Some(until) = c.valid_until {
        provision["period"] = json!({"end": local_time(until.unix_millis())});
    }
    if let Some(org) = &c.grantee_org {
        provision["actor"] = json!([{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
            "reference": {"display": org},
        }]);
    }
    json!({
        "resourceType": "Consent",
        "id": id("Consent", &c.consent_id),
        "identifier": [{"system": "urn:hixbus:consent-id", "value": c.consent_id}],
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": if c.purpose == PurposeOfUse::Research { "research" } else { "patient-privacy" }}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": reference(patient),
        "dateTime": local_time(c.envelope.occurred_at.unix_millis()),
        "policyRule": {"coding": [{"system": "urn:hixbus:consent-policy", "code": crate::consent::POLICY_VERSION}]},
        "provision": provision,
    })
}

/// The record of `patient_ref` (entries oldest first), their consents and their audit entries
/// as a Bundle.
pub fn bundle(
    patient_ref: &str,
    record: &[Entry],
    consents: &[ConsentChanged],
    audit: &[AuditEntry],
) -> Value {
    let patient = id("patient", patient_ref);
    let mut resources = vec![json!({
        "resourceType": "Patient",
        "id": patient,
        "identifier": [{"system": PATIENT_REF_SYSTEM, "value": patient_ref}],
    })];
    // Prescribed lines, by (prescription, line), for the dispensings to point at.
    let mut requests: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut dispensed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for e in record {
        if let Fact::Dispensing(d) = &e.fact {
            dispensed.insert(d.prescription_id.clone());
        }
    }
    let mut coverages: BTreeMap<String, Value> = BTreeMap::new();
    for e in record {
        match &e.fact {
            Fact::Prescription(p) => {
                let status = if e.cancellation().is_some() {
                    "cancelled"
                } else if dispensed.contains(&p.prescription_id) {
                    "completed"
                } else {
                    "active"
                };
                for line in &p.lines {
                    let rid = id(
                        "MedicationRequest",
                        &format!("{}/{}", p.prescription_id, line.line_no),
                    );
                    requests.insert((p.prescription_id.clone(), line.line_no), rid.clone());
                    let mut r = json!({
                        "resourceType": "MedicationRequest",
                        "id": rid,
                        "identifier": [{"system": "urn:hixbus:prescription-line", "value": format!("{}/{}", p.prescription_id, line.line_no)}],
                        "groupIdentifier": {"system": PRESCRIPTION_SYSTEM, "value": p.prescription_id},
                        "status": status,
                        "intent": "order",
                        "medicationCodeableConcept": codeable(&line.drug),
                        "subject": reference(&patient),
                        "authoredOn": date(p.issued_on),
                        "requester": {"display": p.prescriber.name.clone().unwrap_or_else(|| p.issuer.org_id.clone())},
                        "dosageInstruction": [{"text": line.timing_text}],
                        "dispenseRequest": {
                            "quantity": {"value": line.quantity.value, "unit": line.quantity.unit},
                        },
                        "substitution": {"allowedBoolean": line.generic_substitution_allowed},
                    });
                    if let Some(days) = line.days_supply {
                        r["dispenseRequest"]["expectedSupplyDuration"] = json!({
                            "value": days, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d",
                        });
                    }
                    if let Some(c) = e.cancellation() {
                        r["statusReason"] = json!({"text": c.reason});
                    }
                    resources.push(r);
                }
            }
            Fact::Dispensing(d) => {
                for line in &d.lines {
                    let mut r = json!({
                        "resourceType": "MedicationDispense",
                        "id": id("MedicationDispense", &format!("{}/{}", e.key, line.prescription_line_no)),
                        "status": "completed",
                        "medicationCodeableConcept": codeable(&line.drug),
                        "subject": reference(&patient),
                        "performer": [{"actor": {"display": d.pharmacy.name.clone().unwrap_or_else(|| d.pharmacy.org_id.clone())}}],
                        "quantity": {"value": line.quantity.value, "unit": line.quantity.unit},
                        "whenHandedOver": local_time(e.at),
                        "substitution": {"wasSubstituted": line.substituted},
                    });
                    if let Some(rid) =
                        requests.get(&(d.prescription_id.clone(), line.prescription_line_no))
                    {
                        r["authorizingPrescription"] = json!([reference(rid)]);
                    }
                    if let Some(days) = line.days_supply {
                        r["daysSupply"] = json!({"value": days, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"});
                    }
                    if let Some(reason) = &line.substitution_reason {
                        r["substitution"]["reason"] = json!([{"text": reason}]);
                    }
                    resources.push(r);
                }
            }
            Fact::Alert(a) => {
                let severity = match a.severity {
                    AlertSeverity::High | AlertSeverity::Contraindicated => "high",
                    AlertSeverity::Warning => "moderate",
                    AlertSeverity::Info => "low",
                };
                let implicated: Vec<Value> = a
                    .involved
                    .iter()
                    .filter_map(|l| requests.get(&(l.prescription_id.clone(), l.line_no)))
                    .map(|rid| reference(rid))
                    .collect();
                let mut r = json!({
                    "resourceType": "DetectedIssue",
                    "id": id("DetectedIssue", &e.key),
                    "status": "final",
                    "severity": severity,
                    "patient": reference(&patient),
                    "identifiedDateTime": local_time(e.at),
                    "detail": a.message,
                });
                if !implicated.is_empty() {
                    r["implicated"] = json!(implicated);
                }
                resources.push(r);
            }
            Fact::LabResult(report) => {
                let status = observation_status(report.status);
                let effective = local_time(report.specimen.collected_at.unix_millis());
                let mut results = Vec::new();
                for (n, o) in report.results.iter().enumerate() {
                    let oid = id("Observation", &format!("{}/{n}", e.key));
                    results.push(reference(&oid));
                    resources.push(observation(
                        o,
                        &oid,
                        &patient,
                        status,
                        "laboratory",
                        &effective,
                    ));
                }
                resources.push(json!({
                    "resourceType": "DiagnosticReport",
                    "id": id("DiagnosticReport", &e.key),
                    "identifier": [{"system": format!("urn:hixbus:lab-report:{}", report.performing_lab.org_id), "value": report.report_id}],
                    "status": status,
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "11502-2", "display": "Laboratory report"}]},
                    "subject": reference(&patient),
                    "effectiveDateTime": effective,
                    "performer": [{"display": report.performing_lab.name.clone().unwrap_or_else(|| report.performing_lab.org_id.clone())}],
                    "result": results,
                }));
            }
            Fact::Checkup(c) => {
                let effective = date(c.performed_on);
                let mut results = Vec::new();
                for (n, o) in c.items.iter().enumerate() {
                    let oid = id("Observation", &format!("{}/{n}", e.key));
                    results.push(reference(&oid));
                    resources.push(observation(o, &oid, &patient, "final", "exam", &effective));
                }
                let mut r = json!({
                    "resourceType": "DiagnosticReport",
                    "id": id("DiagnosticReport", &e.key),
                    "identifier": [{"system": format!("urn:hixbus:checkup:{}", c.performed_by.org_id), "value": c.checkup_id}],
                    "status": "final",
                    "code": {"text": enum_text(&c.checkup_type)},
                    "subject": reference(&patient),
                    "effectiveDateTime": effective,
                    "performer": [{"display": c.performed_by.name.clone().unwrap_or_else(|| c.performed_by.org_id.clone())}],
                    "result": results,
                });
                if let Some(assessment) = &c.overall_assessment {
                    r["conclusion"] = json!(assessment);
                }
                resources.push(r);
            }
            Fact::Claim(c) => {
                let cov_key = c.coverage.as_ref().map_or_else(
                    || format!("insurer:{}", c.insurer_org),
                    |cov| format!("{}:{}", cov.insurer_number, cov.number),
                );
                let cid = id("Coverage", &format!("{patient_ref}/{cov_key}"));
                coverages.entry(cid.clone()).or_insert_with(|| match &c.coverage {
                    Some(cov) => coverage_resource(&cid, &patient, cov),
                    None => json!({
                        "resourceType": "Coverage", "id": cid, "status": "active",
                        "beneficiary": reference(&patient), "payor": [{"display": c.insurer_org}],
                    }),
                });
                let claim_id = id("Claim", &format!("{}/{}", e.key, c.version));
                let claim_type = match c.claim_type {
                    hixbus_contracts::ClaimType::Pharmacy => "pharmacy",
                    hixbus_contracts::ClaimType::Institutional => "institutional",
                    _ => "professional",
                };
                let mut r = json!({
                    "resourceType": "Claim",
                    "id": claim_id,
                    "identifier": [{"system": format!("urn:hixbus:claim:{}", c.provider.org_id), "value": c.claim_id}],
                    "status": "active",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": claim_type}]},
                    "use": "claim",
                    "patient": reference(&patient),
                    "billablePeriod": {"start": date(c.service_start), "end": date(c.service_end)},
                    "created": local_time(e.at),
                    "insurer": {"display": c.insurer_org},
                    "provider": {"display": c.provider.name.clone().unwrap_or_else(|| c.provider.org_id.clone())},
                    "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
                    "insurance": [{"sequence": 1, "focal": true, "coverage": reference(&cid)}],
                    "item": c.lines.iter().map(|l| {
                        let mut item = json!({
                            "sequence": l.line_no.max(1),
                            "productOrService": codeable(&l.service),
                            "quantity": {"value": l.quantity},
                            "net": money(l.amount_jpy),
                        });
                        if let Some(unit) = &l.unit {
                            item["quantity"]["unit"] = json!(unit);
                        }
                        if let Some(price) = l.unit_price_jpy {
                            item["unitPrice"] = money(price);
                        }
                        item
                    }).collect::<Vec<_>>(),
                    "total": money(c.total_amount_jpy),
                });
                if let Some(rx) = &c.prescription_id {
                    r["prescription"] =
                        json!({"identifier": {"system": PRESCRIPTION_SYSTEM, "value": rx}});
                }
                resources.push(r);
                if let Some(d) = e.decision(c.version) {
                    let mut response = json!({
                        "resourceType": "ClaimResponse",
                        "id": id("ClaimResponse", &format!("{}/{}", e.key, c.version)),
                        "status": "active",
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": claim_type}]},
                        "use": "claim",
                        "patient": reference(&patient),
                        "created": local_time(d.envelope.occurred_at.unix_millis()),
                        "insurer": {"display": d.insurer_org},
                        "request": reference(&claim_id),
                        "outcome": claim_outcome(d.outcome),
                        "disposition": enum_text(&d.outcome),
                        "total": [{
                            "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "benefit"}]},
                            "amount": money(d.paid_amount_jpy),
                        }],
                    });
                    if !d.reasons.is_empty() {
                        response["processNote"] = json!(
                            d.reasons
                                .iter()
                                .enumerate()
                                .map(|(n, r)| json!({"number": n + 1, "text": r.display.as_deref().unwrap_or(&r.code)}))
                                .collect::<Vec<_>>()
                        );
                    }
                    resources.push(response);
                }
            }
        }
    }
    resources.extend(coverages.into_values());
    resources.extend(consents.iter().map(|c| consent_resource(c, &patient)));
    for (n, a) in audit.iter().enumerate() {
        resources.push(json!({
            "resourceType": "AuditEvent",
            "id": id("AuditEvent", &format!("{patient_ref}/{n}/{}", a.at)),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
            "subtype": [{"system": "urn:hixbus:audit-action", "code": a.action}],
            "recorded": a.at,
            "agent": [{"who": {"display": a.org_id}, "requestor": true}],
            "source": {"observer": {"display": "hixbus patient record"}},
            "entity": [{"what": {"display": a.subject_id}}],
        }));
    }
    json!({
        "resourceType": "Bundle",
        "id": id("Bundle", patient_ref),
        "type": "collection",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "entry": resources.into_iter().filter_map(|mut r| prune(&mut r).then_some(r)).map(|r| json!({
            "fullUrl": format!("urn:uuid:{}", r["id"].as_str().unwrap_or_default()),
            "resource": r,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_elements_are_left_out_not_sent_empty() {
        let mut r = json!({
            "resourceType": "AuditEvent",
            "entity": [{"what": {"display": ""}}],
            "agent": [{"who": {"display": "clinic-sakura"}, "requestor": false}],
            "note": null,
            "code": {"coding": [], "text": " "},
        });
        assert!(prune(&mut r));
        assert_eq!(
            r,
            json!({"resourceType": "AuditEvent", "agent": [{"who": {"display": "clinic-sakura"}, "requestor": false}]})
        );
    }
}
