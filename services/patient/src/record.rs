//! What the patient sees of their record: each entry as a timeline item, and the views made
//! from the whole record — current medications with their alerts, lab trends per test across
//! institutions, checkups year over year, and medical expenses (the 医療費通知 view of the
//! claims and the insurers' decisions). Pure functions of the entries, so every view is as
//! fresh as the record and is the same after a rebuild.

use std::collections::{BTreeMap, HashMap};

use hixbus_contracts::time::{Date, Timestamp};
use hixbus_contracts::{
    ClaimSubmitted, CodedConcept, InstitutionRef, Observation, ReportStatus, lifecycle,
};
use serde_json::{Value, json};

use crate::store::{Entry, Fact, Kind};

/// An instant as the patient reads it: RFC 3339 in Japan's time.
pub fn local_time(ms: i64) -> String {
    Timestamp::from_unix_millis(ms)
        .to_datetime()
        .map(|t| {
            t.with_timezone(&lifecycle::japan())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        })
        .unwrap_or_default()
}

fn name(institution: &InstitutionRef) -> &str {
    institution.name.as_deref().unwrap_or(&institution.org_id)
}

fn concept(c: &CodedConcept) -> Value {
    json!({"system": c.system, "code": c.code, "name": c.display.as_deref().unwrap_or(&c.code)})
}

fn enum_name<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// An event enum as its wire name (`SPECIFIC_HEALTH_CHECKUP`), as text.
pub fn enum_text<T: serde::Serialize>(value: &T) -> String {
    enum_name(value).as_str().unwrap_or_default().to_owned()
}

/// One result as the patient reads it: the value with the reference range that applied then.
pub fn observation(o: &Observation) -> Value {
    let value = match (&o.value_numeric, &o.value_coded, &o.value_text) {
        (Some(n), _, _) => json!(n),
        (None, Some(c), _) => json!(c.display.as_deref().unwrap_or(&c.code)),
        (None, None, Some(t)) => json!(t),
        (None, None, None) => Value::Null,
    };
    json!({
        "code": o.code.code,
        "system": o.code.system,
        "name": o.code.display.as_deref().unwrap_or(&o.code.code),
        "value": value,
        "unit": o.unit,
        "reference_range": o.reference_range.as_ref().map(|r| json!({
            "low": r.low, "high": r.high, "text": r.text,
        })),
        "interpretation": enum_name(&o.interpretation),
    })
}

fn claim_view(entry: &Entry, c: &ClaimSubmitted) -> Value {
    let decision = entry.decision(c.version).map(|d| {
        json!({
            "outcome": enum_name(&d.outcome),
            "paid_jpy": d.paid_amount_jpy,
            "reduced_by_jpy": d.reduced_by_jpy,
            "reasons": d.reasons.iter().map(concept).collect::<Vec<_>>(),
        })
    });
    json!({
        "claim_id": c.claim_id,
        "version": c.version,
        "type": enum_name(&c.claim_type),
        "provider": name(&c.provider),
        "insurer": c.insurer_org,
        "prescription_id": c.prescription_id,
        "service_start": c.service_start.to_string(),
        "service_end": c.service_end.to_string(),
        "total_jpy": c.total_amount_jpy,
        "patient_jpy": c.patient_copay_jpy,
        "insurer_jpy": c.insurer_share_jpy,
        "public_expense_jpy": c.public_expense_jpy,
        "lines": c.lines.iter().map(|l| json!({
            "service": concept(&l.service), "quantity": l.quantity, "unit": l.unit,
            "amount_jpy": l.amount_jpy,
        })).collect::<Vec<_>>(),
        "status": if decision.is_some() { "decided" } else { "awaiting decision" },
        "decision": decision,
    })
}

/// What a checkup concluded, without its items.
fn checkup(c: &hixbus_contracts::CheckupCompleted) -> Value {
    json!({
        "checkup_id": c.checkup_id,
        "type": enum_name(&c.checkup_type),
        "performed_on": c.performed_on.to_string(),
        "institution": name(&c.performed_by),
        "metabolic_syndrome": c.metabolic_syndrome.as_ref().map(concept),
        "guidance_level": c.guidance_level.as_ref().map(concept),
    })
}

/// An entry as a timeline item: what happened, when, where, and its content.
pub fn item(entry: &Entry) -> Value {
    let detail = match &entry.fact {
        Fact::Prescription(p) => {
            let cancelled = entry.cancellation();
            json!({
                "prescription_id": p.prescription_id,
                "issued_on": p.issued_on.to_string(),
                "expires_on": p.expires_on.map(|d| d.to_string()),
                "institution": name(&p.issuer),
                "prescriber": p.prescriber.name,
                "status": if cancelled.is_some() { "cancelled" } else { "issued" },
                "cancelled": cancelled.map(|c| json!({
                    "reason": c.reason,
                    "at": local_time(c.envelope.occurred_at.unix_millis()),
                })),
                "lines": p.lines.iter().map(|l| json!({
                    "line_no": l.line_no,
                    "drug": concept(&l.drug),
                    "dose_per_day": l.dose_per_day.as_ref().map(|q| format!("{} {}", q.value, q.unit)),
                    "timing": l.timing_text,
                    "days_supply": l.days_supply,
                    "quantity": format!("{} {}", l.quantity.value, l.quantity.unit),
                    "instructions": l.instructions,
                })).collect::<Vec<_>>(),
            })
        }
        Fact::Dispensing(d) => json!({
            "prescription_id": d.prescription_id,
            "pharmacy": name(&d.pharmacy),
            "pharmacist": d.pharmacist.name,
            "partial": d.partial,
            "lines": d.lines.iter().map(|l| json!({
                "prescription_line_no": l.prescription_line_no,
                "drug": concept(&l.drug),
                "quantity": format!("{} {}", l.quantity.value, l.quantity.unit),
                "days_supply": l.days_supply,
                "substituted": l.substituted,
                "substitution_reason": l.substitution_reason,
            })).collect::<Vec<_>>(),
        }),
        Fact::Alert(a) => json!({
            "prescription_id": a.prescription_id,
            "kind": enum_name(&a.kind),
            "severity": enum_name(&a.severity),
            "message": a.message,
            "involved": a.involved.iter().map(|l| json!({
                "prescription_id": l.prescription_id,
                "drug": concept(&l.drug),
            })).collect::<Vec<_>>(),
        }),
        Fact::LabResult(r) => json!({
            "report_id": r.report_id,
            "lab": name(&r.performing_lab),
            "ordered_by": r.ordering.as_ref().map(name),
            "status": enum_name(&r.status),
            "collected_at": local_time(r.specimen.collected_at.unix_millis()),
            "specimen": concept(&r.specimen.specimen_type),
            "results": r.results.iter().map(observation).collect::<Vec<_>>(),
        }),
        Fact::Checkup(c) => {
            let mut view = checkup(c);
            view["assessment"] = json!(c.overall_assessment);
            view["items"] = json!(c.items.iter().map(observation).collect::<Vec<_>>());
            view
        }
        Fact::Claim(c) => claim_view(entry, c),
    };
    json!({
        "kind": entry.kind(),
        "id": entry.key,
        "at": local_time(entry.at),
        "org": entry.org_id,
        "detail": detail,
    })
}

/// How long a prescription that was never dispensed can still be collected when it names no
/// expiry: the usual four days (lifecycle::expires_on).
fn collect_by(p: &hixbus_contracts::PrescriptionIssued) -> Date {
    p.expires_on
        .unwrap_or_else(|| lifecycle::expires_on(p.issued_on))
}

/// The medications the patient is taking or has to collect on `today`, with every safety alert
/// about them. A prescription counts from its (first) dispensing for its days of supply; one not
/// dispensed yet counts until it can no longer be collected; a cancelled one not at all. A line
/// without days of supply (an ointment, eye drops) counts for 30 days.
pub fn medications(record: &[Entry], today: Date) -> Value {
    let mut dispensings: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let mut alerts: HashMap<&str, Vec<Value>> = HashMap::new();
    for e in record {
        match &e.fact {
            Fact::Dispensing(d) => dispensings
                .entry(d.prescription_id.as_str())
                .or_default()
                .push(e),
            Fact::Alert(a) => {
                for id in std::iter::once(a.prescription_id.as_str())
                    .chain(a.involved.iter().map(|l| l.prescription_id.as_str()))
                {
                    let list = alerts.entry(id).or_default();
                    if !list.iter().any(|v| v["alert_id"] == json!(a.alert_id)) {
                        list.push(json!({
                            "alert_id": a.alert_id,
                            "kind": enum_name(&a.kind),
                            "severity": enum_name(&a.severity),
                            "message": a.message,
                        }));
                    }
                }
            }
            _ => {}
        }
    }
    let mut current = Vec::new();
    for e in record {
        let Fact::Prescription(p) = &e.fact else {
            continue;
        };
        if e.cancellation().is_some() {
            continue;
        }
        let given = dispensings.get(p.prescription_id.as_str());
        let handed_over = given.and_then(|g| {
            g.iter()
                .filter_map(|d| lifecycle::date_in_japan(Timestamp::from_unix_millis(d.at)))
                .min()
        });
        for line in &p.lines {
            let dispensed = given.and_then(|g| {
                g.iter().find_map(|d| match &d.fact {
                    Fact::Dispensing(d) => d
                        .lines
                        .iter()
                        .find(|l| l.prescription_line_no == line.line_no),
                    _ => None,
                })
            });
            let (status, until) = match handed_over {
                Some(start) => {
                    let days = dispensed
                        .and_then(|d| d.days_supply)
                        .or(line.days_supply)
                        .unwrap_or(30)
                        .max(1);
                    ("taking", start.plus_days(days - 1))
                }
                None => ("to collect", collect_by(p)),
            };
            if until < today {
                continue;
            }
            current.push(json!({
                "prescription_id": p.prescription_id,
                "line_no": line.line_no,
                "drug": concept(dispensed.map_or(&line.drug, |d| &d.drug)),
                "prescribed_drug": concept(&line.drug),
                "substituted": dispensed.is_some_and(|d| d.substituted),
                "dose_per_day": line.dose_per_day.as_ref().map(|q| format!("{} {}", q.value, q.unit)),
                "timing": line.timing_text,
                "instructions": line.instructions,
                "status": status,
                "until": until.to_string(),
                "prescribed_by": name(&p.issuer),
                "issued_on": p.issued_on.to_string(),
                "alerts": alerts.get(p.prescription_id.as_str()).cloned().unwrap_or_default(),
            }));
        }
    }
    json!({"as_of": today.to_string(), "medications": current})
}

/// Every numeric or coded result per test code, across institutions, oldest first, each with
/// the reference range that applied when it was measured. A withdrawn report is left out.
pub fn lab_trends(record: &[Entry], code: Option<&str>) -> Value {
    let mut series: BTreeMap<(String, String), (Value, Vec<Value>)> = BTreeMap::new();
    for e in record {
        let Fact::LabResult(r) = &e.fact else {
            continue;
        };
        if r.status == ReportStatus::Cancelled {
            continue;
        }
        for o in &r.results {
            if code.is_some_and(|c| c != o.code.code) {
                continue;
            }
            let view = observation(o);
            let (_, values) = series
                .entry((o.code.system.clone(), o.code.code.clone()))
                .or_insert_with(|| (concept(&o.code), Vec::new()));
            values.push(json!({
                "at": local_time(r.specimen.collected_at.unix_millis()),
                "value": view["value"],
                "unit": view["unit"],
                "reference_range": view["reference_range"],
                "interpretation": view["interpretation"],
                "lab": name(&r.performing_lab),
                "report_id": r.report_id,
                "status": enum_name(&r.status),
            }));
        }
    }
    let tests: Vec<Value> = series
        .into_values()
        .map(|(test, mut values)| {
            values.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
            json!({"test": test, "values": values})
        })
        .collect();
    json!({"tests": tests})
}

/// Checkups by year, and each item's value year over year.
pub fn checkups(record: &[Entry]) -> Value {
    let mut list = Vec::new();
    let mut items: BTreeMap<(String, String), (Value, BTreeMap<String, Value>)> = BTreeMap::new();
    for e in record {
        let Fact::Checkup(c) = &e.fact else {
            continue;
        };
        let year = c
            .performed_on
            .to_naive_date()
            .map(|d| chrono::Datelike::year(&d).to_string())
            .unwrap_or_default();
        let mut view = checkup(c);
        view["year"] = json!(year);
        list.push(view);
        for o in &c.items {
            let view = observation(o);
            items
                .entry((o.code.system.clone(), o.code.code.clone()))
                .or_insert_with(|| (concept(&o.code), BTreeMap::new()))
                .1
                .insert(
                    year.clone(),
                    json!({"value": view["value"], "unit": view["unit"], "reference_range": view["reference_range"]}),
                );
        }
    }
    json!({
        "checkups": list,
        "items": items.into_values().map(|(item, by_year)| json!({"item": item, "by_year": by_year})).collect::<Vec<_>>(),
    })
}

/// The 医療費通知 view: each claim's latest version by the month of care, what the care cost
/// in all, what the patient paid at the counter, what the insurer paid (its decision, or what
/// it was billed while undecided), and totals per year. `year`, when given, keeps one year.
pub fn expenses(record: &[Entry], year: Option<i32>) -> Value {
    let mut claims = Vec::new();
    let mut totals: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
    for e in record {
        let Fact::Claim(c) = &e.fact else {
            continue;
        };
        let Some(start) = c.service_start.to_naive_date() else {
            continue;
        };
        if year.is_some_and(|y| chrono::Datelike::year(&start) != y) {
            continue;
        }
        let decision = e.decision(c.version);
        let insurer_paid = decision.map_or(c.insurer_share_jpy, |d| d.paid_amount_jpy);
        let y = chrono::Datelike::year(&start).to_string();
        let t = totals.entry(y).or_default();
        t.0 += c.total_amount_jpy;
        t.1 += c.patient_copay_jpy;
        t.2 += insurer_paid;
        t.3 += c.public_expense_jpy;
        claims.push(json!({
            "month": start.format("%Y-%m").to_string(),
            "provider": name(&c.provider),
            "type": enum_name(&c.claim_type),
            "claim_id": c.claim_id,
            "version": c.version,
            "total_jpy": c.total_amount_jpy,
            "patient_jpy": c.patient_copay_jpy,
            "insurer_jpy": insurer_paid,
            "public_expense_jpy": c.public_expense_jpy,
            "status": decision.map_or(json!("awaiting decision"), |d| enum_name(&d.outcome)),
        }));
    }
    json!({
        "claims": claims,
        "years": totals.into_iter().map(|(year, (total, patient, insurer, public))| json!({
            "year": year, "total_jpy": total, "patient_jpy": patient,
            "insurer_jpy": insurer, "public_expense_jpy": public,
        })).collect::<Vec<_>>(),
    })
}

/// The kinds named in a `kind=a,b` filter; an unknown one is an error naming the known ones.
pub fn kinds(text: &str) -> Result<Vec<Kind>, String> {
    text.split(',')
        .filter(|k| !k.trim().is_empty())
        .map(|k| {
            Kind::parse(k.trim()).ok_or_else(|| {
                format!(
                    "unknown kind {k:?}: use {}",
                    Kind::ALL.map(Kind::as_str).join(", ")
                )
            })
        })
        .collect()
}
