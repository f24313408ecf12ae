//! The consent policy: who may see which of a patient's data from other institutions, decided
//! from the patient's consents as they stand now. Pure functions of the consents, so every
//! replica decides the same way from the same table, and every decision names the policy
//! version and the consent (or break-glass) it rests on, for the audit trail.
//!
//! The rules (docs/patients.md, "Consent"):
//! - an institution always sees what it produced itself (its prescriptions, its dispensings,
//!   the results it reported or ordered);
//! - another institution's data only under a consent the patient granted to that institution,
//!   for its purpose (treatment for clinics and hospitals, dispensing for pharmacies), covering
//!   the data's category, not revoked and not expired — a visit consent lasts 24 hours, a
//!   standing one until revoked;
//! - or under break-glass: an emergency access the institution declared with a reason, for a
//!   limited time, shown to the patient first in their access list;
//! - research use is allowed unless the patient opts out (the opt-out model of Japan's Next
//!   Generation Medical Infrastructure Act); the research stream applies it.
//!
//! The same rules serve the patient service's summary, the pharmacy inbox and the clinic view
//! (what each shows of a medication-safety alert, `alerts.rs`): one version, one place.

use hixbus_access::Role;
use hixbus_contracts::{ConsentChanged, ConsentDecision, DataCategory, PurposeOfUse};
use serde_json::{Value, json};

/// The version of these rules. Every decision recorded in the audit log names it, so a later
/// change of the rules does not rewrite what an earlier decision rested on.
pub const POLICY_VERSION: &str = "hixbus-consent-2026-11";

/// How long a visit consent (受診時の同意) lasts.
pub const VISIT_HOURS: i64 = 24;
/// The longest a break-glass access may last, and the shortest reason it takes.
pub const MAX_BREAK_GLASS_MINUTES: i64 = 240;
pub const MIN_REASON_CHARS: usize = 10;

/// Where the law decides, not the patient: told to the patient beside their consents so they
/// are not misled about what a revocation changes.
pub fn legal_notes() -> Value {
    json!([
        {
            "category": "CHECKUPS",
            "note": "Specific health checkup (特定健診) results go to your health insurer whatever you decide here: the Act on Assurance of Medical Care for Elderly People (高齢者の医療の確保に関する法律) requires it.",
        },
        {
            "category": "CLAIMS",
            "note": "Claims for your care go to your health insurer whatever you decide here: that is how your care is paid for.",
        },
        {
            "category": "ALL",
            "note": "Institutions always see what they recorded themselves. In an emergency a treating institution may open your record without consent (break-glass); it must say why, it lasts at most four hours, and it is shown first in your access list.",
        },
        {
            "category": "RESEARCH",
            "note": "De-identified data may be used for research unless you opt out; opting out takes effect for data shared from then on.",
        },
    ])
}

/// The purpose an organization of `role` reads a summary for; `None`: it reads none.
pub fn purpose_of(role: Role) -> Option<PurposeOfUse> {
    match role {
        Role::Clinic | Role::Hospital => Some(PurposeOfUse::Treatment),
        Role::Pharmacy => Some(PurposeOfUse::Dispensing),
        Role::Insurer | Role::Lab | Role::Operator | Role::Researcher => None,
    }
}

/// What a decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The consent with this id.
    Consent(String),
    /// The break-glass access with this id.
    BreakGlass(String),
}

impl Basis {
    pub fn describe(&self) -> String {
        match self {
            Basis::Consent(id) => format!("consent:{id}"),
            Basis::BreakGlass(id) => format!("break-glass:{id}"),
        }
    }
}

/// A break-glass access in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    pub id: String,
    pub org_id: String,
    pub until_ms: i64,
}

/// Whether a consent decision lets anyone see anything at `now_ms`: granted, and not ended.
pub fn in_force(c: &ConsentChanged, now_ms: i64) -> bool {
    c.decision == ConsentDecision::Granted && c.valid_until.is_none_or(|t| t.unix_millis() > now_ms)
}

/// Which of the categories `org` may see of other institutions' data at `now_ms`, and on what
/// basis each rests: break-glass first (it opens everything), then the consents.
pub fn allowed(
    consents: &[ConsentChanged],
    breaks: &[BreakGlass],
    org: &str,
    purpose: PurposeOfUse,
    now_ms: i64,
) -> Vec<(DataCategory, Basis)> {
    if let Some(b) = breaks
        .iter()
        .find(|b| b.org_id == org && b.until_ms > now_ms)
    {
        return vec![(DataCategory::All, Basis::BreakGlass(b.id.clone()))];
    }
    let mut out: Vec<(DataCategory, Basis)> = Vec::new();
    for c in consents {
        if !in_force(c, now_ms) || c.grantee_org.as_deref() != Some(org) || c.purpose != purpose {
            continue;
        }
        for category in &c.scope {
            if !out.iter().any(|(have, _)| have == category) {
                out.push((*category, Basis::Consent(c.consent_id.clone())));
            }
        }
    }
    out
}

/// The basis on which `category` may be shown, if any.
pub fn basis_for(allowed: &[(DataCategory, Basis)], category: DataCategory) -> Option<&Basis> {
    allowed
        .iter()
        .find(|(c, _)| *c == category || *c == DataCategory::All)
        .map(|(_, b)| b)
}

/// Whether the patient has opted out of research use, as of their latest research decision.
pub fn research_opted_out(consents: &[ConsentChanged]) -> bool {
    consents
        .iter()
        .filter(|c| c.purpose == PurposeOfUse::Research && c.grantee_org.is_none())
        .max_by_key(|c| c.envelope.occurred_at)
        .is_some_and(|c| c.decision == ConsentDecision::Revoked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::{Timestamp, samples};

    fn consent(id: &str, org: &str, scope: &[DataCategory], until: Option<i64>) -> ConsentChanged {
        let mut c = samples::consent_changed("pt-1");
        c.consent_id = id.into();
        c.grantee_org = Some(org.into());
        c.purpose = PurposeOfUse::Treatment;
        c.scope = scope.to_vec();
        c.valid_until = until.map(Timestamp::from_unix_millis);
        c
    }

    #[test]
    fn a_consent_opens_its_categories_to_its_grantee_for_its_purpose_until_it_ends() {
        let now = 1_800_000_000_000;
        let visit = consent("visit", "clinic-a", &[DataCategory::All], Some(now + 1));
        let labs = consent("labs", "clinic-b", &[DataCategory::LabResults], None);
        let consents = [visit.clone(), labs];
        let a = allowed(&consents, &[], "clinic-a", PurposeOfUse::Treatment, now);
        assert_eq!(
            basis_for(&a, DataCategory::Prescriptions),
            Some(&Basis::Consent("visit".into()))
        );
        // Expired a millisecond later; never for another purpose or another institution.
        assert!(allowed(&consents, &[], "clinic-a", PurposeOfUse::Treatment, now + 1).is_empty());
        assert!(allowed(&consents, &[], "clinic-a", PurposeOfUse::Dispensing, now).is_empty());
        assert!(allowed(&consents, &[], "clinic-c", PurposeOfUse::Treatment, now).is_empty());
        // A standing consent for results only opens results only.
        let b = allowed(&consents, &[], "clinic-b", PurposeOfUse::Treatment, now);
        assert!(basis_for(&b, DataCategory::LabResults).is_some());
        assert!(basis_for(&b, DataCategory::Prescriptions).is_none());
        // Revoked: the same consent id, decided again.
        let mut revoked = visit;
        revoked.decision = ConsentDecision::Revoked;
        assert!(allowed(&[revoked], &[], "clinic-a", PurposeOfUse::Treatment, now).is_empty());
    }

    #[test]
    fn break_glass_opens_everything_for_its_institution_until_it_ends() {
        let now = 1_800_000_000_000;
        let b = BreakGlass {
            id: "bg-1".into(),
            org_id: "hospital-er".into(),
            until_ms: now + 60_000,
        };
        let open = allowed(
            &[],
            std::slice::from_ref(&b),
            "hospital-er",
            PurposeOfUse::Treatment,
            now,
        );
        assert_eq!(
            basis_for(&open, DataCategory::LabResults),
            Some(&Basis::BreakGlass("bg-1".into()))
        );
        assert!(
            allowed(
                &[],
                std::slice::from_ref(&b),
                "clinic-a",
                PurposeOfUse::Treatment,
                now
            )
            .is_empty()
        );
        assert!(
            allowed(
                &[],
                &[b],
                "hospital-er",
                PurposeOfUse::Treatment,
                now + 60_000
            )
            .is_empty()
        );
    }

    #[test]
    fn the_latest_research_decision_counts() {
        let mut out = samples::consent_changed("pt-1");
        out.grantee_org = None;
        out.purpose = PurposeOfUse::Research;
        out.decision = ConsentDecision::Revoked;
        let mut back_in = out.clone();
        back_in.decision = ConsentDecision::Granted;
        back_in.envelope.occurred_at =
            Timestamp::from_unix_millis(out.envelope.occurred_at.unix_millis() + 1);
        assert!(!research_opted_out(&[]));
        assert!(research_opted_out(std::slice::from_ref(&out)));
        assert!(!research_opted_out(&[back_in.clone(), out.clone()]));
        assert!(research_opted_out(&[out]));
    }
}
