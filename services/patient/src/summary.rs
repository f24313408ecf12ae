//! The cross-institution summary a treating institution reads about a patient: medications,
//! dispensing, alerts and results from every institution — its own always, other institutions'
//! only as the patient's consent allows (`consent.rs`), or under break-glass. Every read is
//! audited with the policy version and what each part rested on.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hixbus_access::{Action, Caller};
use hixbus_contracts::DataCategory;
use hixbus_service::{ApiError, JsonPath};
use serde::Deserialize;
use serde_json::json;

use std::collections::HashSet;

use hixbus_consent::{ShownAlert, alerts};
use hixbus_contracts::AlertLine;

use crate::consent::{self, Basis, BreakGlass, POLICY_VERSION};
use crate::record::{self, local_time};
use crate::routes::{AppState, json_body, unavailable};
use crate::store::{Entry, Fact, Kind};

/// The kinds a summary shows: what treating and dispensing need, not claims or checkups.
const SUMMARY_KINDS: [Kind; 4] = [
    Kind::Prescription,
    Kind::Dispensing,
    Kind::Alert,
    Kind::LabResult,
];

/// Whether `org` produced or ordered what `entry` records: its own prescriptions, the
/// dispensing of its prescriptions, the results it reported or ordered. An alert is no one's
/// as a whole: each institution sees its own lines of it (see [`own_alert`]).
pub fn is_own(entry: &Entry, org: &str) -> bool {
    match &entry.fact {
        Fact::Alert(_) => false,
        _ if entry.org_id == org => true,
        Fact::Dispensing(d) => d.issuer_org == org,
        Fact::LabResult(r) => r.ordering.as_ref().is_some_and(|o| o.org_id == org),
        Fact::Prescription(_) | Fact::Checkup(_) | Fact::Claim(_) => false,
    }
}

/// An alert that involves a prescription of `org`'s (one it issued, or dispensed:
/// `dispensed_here`), as `org` may see it: its own lines always, other institutions' lines as
/// `allowed` says. `None`: the alert involves none of `org`'s prescriptions.
fn own_alert(
    entry: &Entry,
    org: &str,
    dispensed_here: &HashSet<&str>,
    allowed: &[(DataCategory, Basis)],
) -> Option<(ShownAlert, Entry)> {
    let Fact::Alert(alert) = &entry.fact else {
        return None;
    };
    let own =
        |l: &AlertLine| l.issuer_org == org || dispensed_here.contains(l.prescription_id.as_str());
    if !alert.involved.iter().any(own) {
        return None;
    }
    let shown = hixbus_consent::shown(alert, own, allowed);
    let entry = Entry {
        fact: Fact::Alert(shown.alert.clone()),
        ..entry.clone()
    };
    Some((shown, entry))
}

fn check_patient_ref(patient_ref: &str) -> Result<(), ApiError> {
    hixbus_service::check_id(patient_ref)
}

/// `GET /summary/{patient_ref}`.
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(patient_ref): JsonPath<String>,
) -> Result<Response, ApiError> {
    let org = caller.require(Action::ViewPatientSummary)?;
    check_patient_ref(&patient_ref)?;
    let purpose = consent::purpose_of(org.role).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no summary for this role",
        )
    })?;
    let refs = state.store.refs(&patient_ref).await.map_err(unavailable)?;
    let now = chrono::Utc::now().timestamp_millis();
    let consents = state.consents(&refs).await?;
    let breaks: Vec<BreakGlass> = state
        .store
        .break_glass(&refs)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|(id, org_id, _, _, until_ms)| BreakGlass {
            id,
            org_id,
            until_ms,
        })
        .collect();
    let allowed = consent::allowed(&consents, &breaks, &org.id, purpose, now);
    let record = state.store.record(&refs).await.map_err(unavailable)?;
    let mut own = Vec::new();
    let mut others = Vec::new();
    let mut withheld: Vec<DataCategory> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    let dispensed_here: HashSet<&str> = record
        .iter()
        .filter_map(|e| match &e.fact {
            Fact::Dispensing(d) if e.org_id == org.id => Some(d.prescription_id.as_str()),
            _ => None,
        })
        .collect();
    for entry in record.iter().rev() {
        if !SUMMARY_KINDS.contains(&entry.kind()) {
            continue;
        }
        if let Some((shown, entry)) = own_alert(entry, &org.id, &dispensed_here, &allowed) {
            let mut item = record::item(&entry);
            if let Some(basis) = &shown.shown_under {
                item["shown_under"] = json!(basis.describe());
                if !used.contains(&basis.describe()) {
                    used.push(basis.describe());
                }
            }
            if shown.withheld > 0 {
                item["detail"]["withheld_lines"] = json!(shown.withheld);
                if shown.alert.prescription_id.is_empty() {
                    item["detail"]["prescription_id"] = serde_json::Value::Null;
                }
                if !withheld.contains(&alerts::CATEGORY) {
                    withheld.push(alerts::CATEGORY);
                }
            }
            own.push(item);
            continue;
        }
        if is_own(entry, &org.id) {
            own.push(record::item(entry));
            continue;
        }
        let category = consent::category(entry.kind());
        match consent::basis_for(&allowed, category) {
            Some(basis) => {
                let mut item = record::item(entry);
                item["shown_under"] = json!(basis.describe());
                others.push(item);
                if !used.contains(&basis.describe()) {
                    used.push(basis.describe());
                }
            }
            None => {
                if !withheld.contains(&category) {
                    withheld.push(category);
                }
            }
        }
    }
    // The audit row says what the answer rested on; what was withheld is not itself revealed
    // to the institution (only that a category needs consent).
    let decision = format!(
        "policy={POLICY_VERSION}; shown={}",
        if used.is_empty() {
            "own only".to_owned()
        } else {
            used.join(",")
        }
    );
    state
        .audit
        .record(&org.id, "summary.read", &decision, &patient_ref)
        .await
        .map_err(unavailable)?;
    let needs_consent: Vec<DataCategory> = SUMMARY_KINDS
        .iter()
        .map(|k| consent::category(*k))
        .filter(|c| consent::basis_for(&allowed, *c).is_none())
        .fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
    Ok(Json(json!({
        "patient_ref": patient_ref,
        "policy_version": POLICY_VERSION,
        "own": own,
        "other_institutions": others,
        "needs_consent": needs_consent,
        "break_glass": allowed.iter().any(|(_, b)| matches!(b, Basis::BreakGlass(_))),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    /// Why consent cannot be asked for: shown to the patient.
    pub reason: String,
    /// How long, at most [`consent::MAX_BREAK_GLASS_MINUTES`] (default 60).
    #[serde(default)]
    pub minutes: Option<i64>,
}

/// `POST /summary/{patient_ref}/break-glass`: emergency access without consent.
pub async fn break_glass(
    State(state): State<AppState>,
    caller: Caller,
    JsonPath(patient_ref): JsonPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let org = caller.require(Action::BreakGlass)?;
    check_patient_ref(&patient_ref)?;
    let request: BreakGlassRequest = json_body(&headers, body).await?;
    let reason = request.reason.trim();
    hixbus_service::text::check_line(reason, 500)
        .map_err(|p| ApiError::invalid(format!("reason {p}")))?;
    if reason.chars().count() < consent::MIN_REASON_CHARS {
        return Err(ApiError::invalid(format!(
            "say why consent cannot be asked for (at least {} characters): the patient will read it",
            consent::MIN_REASON_CHARS
        )));
    }
    let minutes = request.minutes.unwrap_or(60);
    if !(1..=consent::MAX_BREAK_GLASS_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid(format!(
            "minutes must be 1 to {}",
            consent::MAX_BREAK_GLASS_MINUTES
        )));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let until = now + minutes * 60_000;
    state
        .store
        .add_break_glass(&id, &patient_ref, &org.id, reason, now, until)
        .await
        .map_err(unavailable)?;
    state
        .audit
        .record(
            &org.id,
            "summary.break_glass",
            &format!("policy={POLICY_VERSION}; id={id}; reason={reason}"),
            &patient_ref,
        )
        .await
        .map_err(unavailable)?;
    tracing::warn!(org = %org.id, %id, minutes, "break-glass access opened");
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "until": local_time(until), "policy_version": POLICY_VERSION})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    #[test]
    fn an_institution_owns_what_it_made_or_ordered() {
        let rx = samples::prescription_issued("pt", 1);
        let issuer = rx.issuer.org_id.clone();
        let entry = |fact: Fact, org: &str| Entry {
            key: "k".into(),
            patient_ref: "pt".into(),
            event_id: "e".into(),
            at: 0,
            org_id: org.into(),
            rank: 0,
            fact,
            changes: vec![],
        };
        let mut dispensed = samples::prescription_dispensed("pt");
        dispensed.issuer_org = issuer.clone();
        let d = entry(Fact::Dispensing(dispensed), "pharmacy-x");
        assert!(is_own(&d, &issuer));
        assert!(is_own(&d, "pharmacy-x"));
        assert!(!is_own(&d, "clinic-elsewhere"));
        let lab = samples::lab_result_reported("pt");
        let ordering = lab.ordering.clone().unwrap().org_id;
        let r = entry(Fact::LabResult(lab), "lab-minato");
        assert!(is_own(&r, &ordering));
        assert!(!is_own(&r, "clinic-elsewhere"));
    }

    #[test]
    fn an_alert_shows_an_institution_its_own_lines_and_others_only_under_consent() {
        let mut alert = samples::medication_alert("pt");
        let mut theirs = alert.involved[0].clone();
        theirs.prescription_id = "rx-theirs".into();
        theirs.issuer_org = "clinic-b".into();
        let mut mine = theirs.clone();
        mine.prescription_id = "rx-mine".into();
        mine.issuer_org = "clinic-a".into();
        alert.prescription_id = "rx-theirs".into();
        alert.involved = vec![theirs, mine];
        let entry = Entry {
            key: "k".into(),
            patient_ref: "pt".into(),
            event_id: "e".into(),
            at: 0,
            org_id: "hixbus-safety".into(),
            rank: 0,
            fact: Fact::Alert(alert),
            changes: vec![],
        };
        assert!(!is_own(&entry, "clinic-a"), "no one's as a whole");
        let none = HashSet::new();
        let (shown, _) = own_alert(&entry, "clinic-a", &none, &[]).unwrap();
        assert_eq!(shown.withheld, 1);
        let consented = [(DataCategory::All, Basis::Consent("c-1".into()))];
        let (shown, _) = own_alert(&entry, "clinic-a", &none, &consented).unwrap();
        assert_eq!(shown.shown_under, Some(Basis::Consent("c-1".into())));
        // A pharmacy that dispensed one of the prescriptions sees that line as its own.
        let dispensed: HashSet<&str> = ["rx-mine"].into();
        let (shown, _) = own_alert(&entry, "pharmacy-x", &dispensed, &[]).unwrap();
        assert_eq!(shown.alert.involved.len(), 1);
        // An institution with no line in it is not shown it as its own.
        assert!(own_alert(&entry, "clinic-c", &none, &[]).is_none());
    }
}
