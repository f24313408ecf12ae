//! What an institution sees of a medication-safety alert.
//!
//! The check itself runs on every prescription, whatever the patient decided: a duplicate or a
//! contraindicated combination must reach the prescriber and the pharmacist. But an alert names
//! the drugs on both sides, and the other side may be another institution's prescription, which
//! the patient's consent decides about like any other of its data. So, as Japan's
//! e-prescription duplicate check does for a patient who did not consent to sharing, the alert
//! is shown with its kind and severity and the institution's own lines, while another
//! institution's lines, the message and the rule (both name the other drug) are withheld — until
//! the patient consents, and again the moment they revoke, since this is decided at each read.

use hixbus_access::Organization;
use hixbus_contracts::{AlertKind, AlertLine, DataCategory, MedicationAlert};
use hixbus_service::ReadModelError;
use hixbus_storage::AuditLog;
use serde_json::{Value, json};

use crate::ConsentBook;
use crate::policy::{self, Basis, POLICY_VERSION};

/// The category an alert's other-institution lines are consented under: they are
/// prescriptions.
pub const CATEGORY: DataCategory = DataCategory::Prescriptions;

/// An alert as one institution may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownAlert {
    /// The alert itself, or with other institutions' lines, the message and the rule withheld
    /// (and the triggering prescription's id, when it is another institution's, left empty).
    pub alert: MedicationAlert,
    /// What showing another institution's lines rested on, if the alert has any and they
    /// were shown.
    pub shown_under: Option<Basis>,
    /// How many lines were withheld.
    pub withheld: usize,
}

impl ShownAlert {
    /// Whether showing this alert decided anything about another institution's data: those
    /// decisions are audited (see [`ShownAlert::decision`]); an alert about the viewer's own
    /// prescriptions alone is not.
    pub fn decided(&self) -> bool {
        self.shown_under.is_some() || self.withheld > 0
    }

    /// The audit subject of the decision: the policy version, the alert and what the answer
    /// rested on (`hixbus_service::trail` reads the policy from it).
    pub fn decision(&self) -> String {
        let shown = match &self.shown_under {
            Some(basis) => basis.describe(),
            None => format!("own only; withheld={}", self.withheld),
        };
        format!(
            "policy={POLICY_VERSION}; alert={}; shown={shown}",
            self.alert.alert_id
        )
    }

    /// As the APIs show it: the event's JSON, saying what other institutions' lines were shown
    /// under, or how many were withheld and why.
    pub fn json(&self) -> Value {
        let mut json = serde_json::to_value(&self.alert).unwrap_or(Value::Null);
        if let Some(basis) = &self.shown_under {
            json["shown_under"] = json!(basis.describe());
        }
        if self.withheld > 0 {
            if self.alert.prescription_id.is_empty() {
                json["prescription_id"] = Value::Null;
            }
            json["withheld"] = json!({
                "lines": self.withheld,
                "category": CATEGORY,
                "reason": "the patient has not consented to your seeing other institutions' \
                           prescriptions; ask the patient about their other medications, or \
                           ask them to consent",
                "policy_version": POLICY_VERSION,
            });
        }
        json
    }
}

/// What the viewer sees of `alert`: lines for which `own` holds (the viewer issued or holds
/// that prescription) always; the others only if `allowed` (the viewer's standing under the
/// patient's consents, see [`policy::allowed`]) covers prescriptions.
pub fn shown(
    alert: &MedicationAlert,
    own: impl Fn(&AlertLine) -> bool,
    allowed: &[(DataCategory, Basis)],
) -> ShownAlert {
    let (mine, others): (Vec<&AlertLine>, Vec<&AlertLine>) =
        alert.involved.iter().partition(|l| own(l));
    if others.is_empty() {
        return ShownAlert {
            alert: alert.clone(),
            shown_under: None,
            withheld: 0,
        };
    }
    if let Some(basis) = policy::basis_for(allowed, CATEGORY) {
        return ShownAlert {
            alert: alert.clone(),
            shown_under: Some(basis.clone()),
            withheld: 0,
        };
    }
    let mut withheld = alert.clone();
    if !mine
        .iter()
        .any(|l| l.prescription_id == alert.prescription_id)
    {
        // The prescription that set the alert off is another institution's: its id, and the
        // envelope's references to it and to its event, are withheld with it.
        withheld.prescription_id = String::new();
        withheld.envelope.correlation_id = None;
        withheld.envelope.causation_id = None;
    }
    ShownAlert {
        alert: MedicationAlert {
            message: withheld_message(alert.kind),
            involved: mine.into_iter().cloned().collect(),
            rule_source: None,
            ..withheld
        },
        shown_under: None,
        withheld: others.len(),
    }
}

/// A patient's alerts as `org` may see them now (see [`shown`]), as the APIs show them: the
/// book is asked only when some line is another institution's, and each decision about
/// another institution's data is audited (`alert.read`) before anything is returned.
pub async fn shown_audited(
    alerts: &[MedicationAlert],
    own: impl Fn(&AlertLine) -> bool,
    org: &Organization,
    patient_ref: &str,
    book: &ConsentBook,
    audit: &AuditLog,
) -> Result<Vec<Value>, ReadModelError> {
    let allowed = if alerts.iter().flat_map(|a| &a.involved).all(&own) {
        Vec::new()
    } else {
        let now = chrono::Utc::now().timestamp_millis();
        book.allowed(&[patient_ref.to_owned()], org, &[], now)
            .await?
    };
    let mut out = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let s = shown(alert, &own, &allowed);
        if s.decided() {
            audit
                .record(&org.id, "alert.read", &s.decision(), patient_ref)
                .await?;
        }
        out.push(s.json());
    }
    Ok(out)
}

/// The alert's message without the other drug: the kind of problem, and that the details need
/// the patient's consent.
fn withheld_message(kind: AlertKind) -> String {
    let what = match kind {
        AlertKind::DuplicateIngredient => {
            "同一成分の重複: 他の医療機関の処方と重複しています (duplicate ingredient with a prescription from another institution)"
        }
        AlertKind::DuplicateTherapeuticClass => {
            "同効薬の重複: 他の医療機関の処方と同効薬が重複しています (duplicate therapeutic class with a prescription from another institution)"
        }
        AlertKind::ContraindicatedCombination => {
            "併用禁忌: 他の医療機関の処方と併用禁忌の組み合わせがあります (contraindicated combination with a prescription from another institution)"
        }
        AlertKind::InteractionCaution => {
            "併用注意: 他の医療機関の処方との相互作用に注意してください (interaction with a prescription from another institution)"
        }
        AlertKind::Other => {
            "他の医療機関の処方との問題があります (a problem with a prescription from another institution)"
        }
    };
    format!("{what}. 詳細の表示には患者の同意が必要です (its details need the patient's consent)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    /// An alert about a new prescription of `clinic-b` against an earlier one of `clinic-a`.
    fn alert() -> MedicationAlert {
        let mut a = samples::medication_alert("pt-1");
        a.prescription_id = "rx-b".into();
        a.envelope.correlation_id = Some("rx-b".into());
        a.envelope.causation_id = Some("event-of-rx-b".into());
        a.message = "同一成分の重複: ロキソプロフェン".into();
        a.rule_source = Some("duplicate-ingredient: loxoprofen".into());
        let mut new = a.involved[0].clone();
        new.prescription_id = "rx-b".into();
        new.issuer_org = "clinic-b".into();
        let mut earlier = new.clone();
        earlier.prescription_id = "rx-a".into();
        earlier.issuer_org = "clinic-a".into();
        a.involved = vec![new, earlier];
        a
    }

    fn issued_by(org: &'static str) -> impl Fn(&AlertLine) -> bool {
        move |l| l.issuer_org == org
    }

    #[test]
    fn an_institution_sees_its_own_lines_and_not_the_other_drug_without_consent() {
        let a = alert();
        let shown = shown(&a, issued_by("clinic-a"), &[]);
        assert_eq!(shown.withheld, 1);
        assert!(shown.decided());
        let json = shown.json();
        let involved = json["involved"].as_array().unwrap();
        assert_eq!(involved.len(), 1);
        assert_eq!(involved[0]["prescription_id"], "rx-a");
        assert_eq!(json["kind"], "DUPLICATE_INGREDIENT");
        assert_eq!(json["prescription_id"], Value::Null);
        assert_eq!(json["rule_source"], Value::Null);
        let text = json.to_string();
        assert!(
            !text.contains("rx-b") && !text.contains("clinic-b"),
            "{text}"
        );
        assert_eq!(json["envelope"]["correlation_id"], Value::Null);
        assert!(!text.contains("ロキソプロフェン") && !text.contains("loxoprofen"));
        assert_eq!(json["withheld"]["lines"], 1);
        assert_eq!(
            shown.decision(),
            format!(
                "policy={POLICY_VERSION}; alert={}; shown=own only; withheld=1",
                a.alert_id
            )
        );
    }

    #[test]
    fn a_consent_covering_prescriptions_shows_the_whole_alert_and_says_so() {
        let a = alert();
        for scope in [DataCategory::Prescriptions, DataCategory::All] {
            let allowed = [(scope, Basis::Consent("c-1".into()))];
            let shown = shown(&a, issued_by("clinic-a"), &allowed);
            assert_eq!(shown.withheld, 0);
            assert_eq!(shown.shown_under, Some(Basis::Consent("c-1".into())));
            assert_eq!(shown.alert, a);
            assert_eq!(shown.json()["shown_under"], "consent:c-1");
        }
        // A consent to see results does not open prescriptions.
        let results_only = [(DataCategory::LabResults, Basis::Consent("c-2".into()))];
        assert_eq!(shown(&a, issued_by("clinic-a"), &results_only).withheld, 1);
    }

    #[test]
    fn an_alert_about_the_viewers_own_prescriptions_alone_is_shown_whole_and_decides_nothing() {
        let mut a = alert();
        for line in &mut a.involved {
            line.issuer_org = "clinic-b".into();
        }
        let shown = shown(&a, issued_by("clinic-b"), &[]);
        assert!(!shown.decided());
        assert_eq!(shown.json(), serde_json::to_value(&a).unwrap());
    }
}
