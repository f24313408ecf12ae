//! The decision on one claim version, from the claim and what the insurer knows: its roster,
//! the price and fee tables, the evidence the exchange delivered about the prescription, and
//! its own earlier decisions. Pure: the same inputs give the same decision, so a replay agrees
//! with the first run.
//!
//! A claim is **returned** (返戻) when it cannot be paid as sent — not a member on the day, a
//! duplicate, a dispensing claim that does not match a prescription issued to this patient by a
//! real institution and dispensed by this pharmacy (突合), or arithmetic that does not add up —
//! and the provider corrects and resubmits it. It is **reduced** (査定) when a line bills more
//! than the tables allow or the insurer's share is more than the member's share rule leaves:
//! the insurer pays what is due and says by how much less. Otherwise it is **accepted**.

use hixbus_access::{Directory, Role};
use hixbus_claims::shares;
use hixbus_claims::tariff::{FEE_SYSTEM, Tariff};
use hixbus_contracts::{
    ClaimEvidence, ClaimLineType, ClaimOutcome, ClaimSubmitted, ClaimType, CodedConcept, Coverage,
    EvidenceStage, LineAdjustment,
};

use crate::roster::Roster;

/// The code system of the reasons (docs/claims.md lists them).
pub const REASONS: &str = "urn:hixbus:claim-reason";

/// What earlier decisions say about this claim.
#[derive(Debug, Clone, Default)]
pub struct Prior {
    /// Another claim, not returned, billing the same prescription.
    pub prescription_billed_as: Option<String>,
    /// Another claim, not returned, with the same provider, member, dates and lines.
    pub same_content_as: Option<String>,
    /// For a version after the first: the decision on the version before (`None`: this
    /// insurer never saw it).
    pub previous_version: Option<ClaimOutcome>,
    /// This version of this claim was decided already under another event id.
    pub version_decided: bool,
}

#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub insurer_number: &'a str,
    pub roster: &'a Roster,
    pub tariff: &'a Tariff,
    pub directory: &'a Directory,
    pub evidence: Option<&'a ClaimEvidence>,
    pub prior: Prior,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: ClaimOutcome,
    pub paid_jpy: i64,
    pub reduced_by_jpy: i64,
    pub reasons: Vec<CodedConcept>,
    pub line_adjustments: Vec<LineAdjustment>,
}

fn reason(code: &str, words: String) -> CodedConcept {
    CodedConcept::new(REASONS, code, Some(&words))
}

fn returned(reasons: Vec<CodedConcept>) -> Verdict {
    Verdict {
        outcome: ClaimOutcome::Returned,
        paid_jpy: 0,
        reduced_by_jpy: 0,
        reasons,
        line_adjustments: Vec::new(),
    }
}

pub fn decide(claim: &ClaimSubmitted, ctx: &Context<'_>) -> Verdict {
    let mut problems = Vec::new();
    let prior = &ctx.prior;
    if prior.version_decided {
        problems.push(reason(
            "duplicate",
            format!(
                "version {} of claim {} was already decided; send a correction as the next version",
                claim.version, claim.claim_id
            ),
        ));
    }
    // A version whose predecessor this insurer never saw (a dispensing the tables could not
    // price, billed by hand) stands on its own.
    if claim.version > 1
        && prior
            .previous_version
            .is_some_and(|o| o != ClaimOutcome::Returned)
    {
        problems.push(reason(
            "version",
            format!(
                "version {} corrects version {}, which was not returned",
                claim.version,
                claim.version - 1
            ),
        ));
    }
    if let Some(other) = &prior.same_content_as {
        problems.push(reason(
            "duplicate",
            format!("the same services were already billed as claim {other}"),
        ));
    }

    // Eligibility on every day of service.
    let membership = ctx
        .roster
        .on(ctx.insurer_number, &claim.member_id, claim.service_start)
        .filter(|_| {
            ctx.roster
                .on(ctx.insurer_number, &claim.member_id, claim.service_end)
                .is_some()
        });
    if membership.is_none() {
        let words = if ctx.roster.knows(ctx.insurer_number, &claim.member_id) {
            format!(
                "member {} was not covered on {} (資格喪失)",
                claim.member_id, claim.service_start
            )
        } else {
            format!(
                "{} is not a member of insurer {} (資格なし)",
                claim.member_id, ctx.insurer_number
            )
        };
        problems.push(reason("not-member", words));
    }

    // 突合: a dispensing claim against its prescription.
    let mut days_by_line = std::collections::HashMap::new();
    if claim.claim_type == ClaimType::Pharmacy {
        match check_prescription(claim, ctx, &mut days_by_line) {
            Ok(()) => {}
            Err(mut more) => problems.append(&mut more),
        }
    }

    let total: i64 = claim.lines.iter().map(|l| l.amount_jpy).sum();
    if total != claim.total_amount_jpy {
        problems.push(reason(
            "arithmetic",
            format!(
                "the lines add up to {total} yen but the claim's total is {} yen",
                claim.total_amount_jpy
            ),
        ));
    }
    if claim.insurer_share_jpy + claim.patient_copay_jpy + claim.public_expense_jpy
        != claim.total_amount_jpy
    {
        problems.push(reason(
            "arithmetic",
            format!(
                "the insurer's {} yen, the patient's {} yen and public programmes' {} yen do not make the total of {} yen",
                claim.insurer_share_jpy,
                claim.patient_copay_jpy,
                claim.public_expense_jpy,
                claim.total_amount_jpy
            ),
        ));
    }
    if !problems.is_empty() {
        return returned(problems);
    }

    // Prices: a line that bills more than the tables allow is paid at the tables.
    let mut adjustments = Vec::new();
    let mut reasons = Vec::new();
    let mut allowed_total = 0;
    for line in &claim.lines {
        let allowed = allowed_amount(line, ctx.tariff, days_by_line.get(&line.line_no).copied());
        match allowed {
            Err(why) => return returned(vec![reason("price", why)]),
            Ok(Some(allowed)) if allowed < line.amount_jpy => {
                let why = reason(
                    "price",
                    format!(
                        "line {} ({}) bills {} yen; the tables ({}) allow {allowed} yen",
                        line.line_no,
                        line.service
                            .display
                            .as_deref()
                            .unwrap_or(&line.service.code),
                        line.amount_jpy,
                        ctx.tariff.label()
                    ),
                );
                adjustments.push(LineAdjustment {
                    line_no: line.line_no,
                    paid_amount_jpy: allowed,
                    reason: Some(why.clone()),
                });
                reasons.push(why);
                allowed_total += allowed;
            }
            Ok(_) => allowed_total += line.amount_jpy,
        }
    }

    // The shares, by the member's roster entry (its share, or the age rule).
    let membership = membership.cloned().unwrap_or(crate::roster::Membership {
        birth_date: None,
        valid_from: None,
        valid_to: None,
        copay_percent: None,
    });
    let coverage = Coverage {
        copay_percent: membership.copay_percent,
        birth_date: membership.birth_date,
        ..claim.coverage.clone().unwrap_or(Coverage {
            insurer_number: ctx.insurer_number.to_owned(),
            insurer_org: None,
            symbol: None,
            number: claim.member_id.clone(),
            branch: None,
            copay_percent: None,
            birth_date: None,
            public_programs: Vec::new(),
            sex: None,
        })
    };
    let due = shares::split(allowed_total, &coverage, claim.service_end);
    let billed = shares::split(claim.total_amount_jpy, &coverage, claim.service_end);
    if claim.insurer_share_jpy > billed.insurer_jpy {
        reasons.push(reason(
            "share",
            format!(
                "the insurer's share is {} yen at the member's {} % share, not {} yen",
                billed.insurer_jpy, billed.copay_percent, claim.insurer_share_jpy
            ),
        ));
    }
    let paid = due.insurer_jpy.min(claim.insurer_share_jpy);
    if reasons.is_empty() {
        Verdict {
            outcome: ClaimOutcome::Approved,
            paid_jpy: paid,
            reduced_by_jpy: claim.insurer_share_jpy - paid,
            reasons,
            line_adjustments: adjustments,
        }
    } else {
        Verdict {
            outcome: ClaimOutcome::PartiallyApproved,
            paid_jpy: paid,
            reduced_by_jpy: claim.insurer_share_jpy - paid,
            reasons,
            line_adjustments: adjustments,
        }
    }
}

/// 突合: the prescription exists, was issued to this patient by a clinic or hospital, was not
/// cancelled, was dispensed by this pharmacy, and every drug line bills what was handed over,
/// no more than was prescribed. Fills `days_by_line` (claim line → days of supply) for pricing.
fn check_prescription(
    claim: &ClaimSubmitted,
    ctx: &Context<'_>,
    days_by_line: &mut std::collections::HashMap<i32, Option<i32>>,
) -> Result<(), Vec<CodedConcept>> {
    let Some(prescription) = &claim.prescription_id else {
        return Err(vec![reason(
            "no-prescription",
            "a dispensing claim names the prescription it dispensed".to_owned(),
        )]);
    };
    if let Some(other) = &ctx.prior.prescription_billed_as {
        return Err(vec![reason(
            "duplicate",
            format!("prescription {prescription} was already billed as claim {other}"),
        )]);
    }
    let Some(evidence) = ctx.evidence else {
        return Err(vec![reason(
            "no-prescription",
            format!("no prescription {prescription} was issued to this member (突合)"),
        )]);
    };
    if evidence.envelope.patient_ref != claim.envelope.patient_ref {
        return Err(vec![reason(
            "other-patient",
            format!("prescription {prescription} was issued to another patient (突合)"),
        )]);
    }
    let institution = ctx
        .directory
        .get(&evidence.issuer.org_id)
        .is_some_and(|o| matches!(o.role, Role::Clinic | Role::Hospital));
    if !institution {
        return Err(vec![reason(
            "not-an-institution",
            format!(
                "prescription {prescription} was not issued by a medical institution on the exchange"
            ),
        )]);
    }
    match evidence.stage {
        EvidenceStage::Cancelled => {
            return Err(vec![reason(
                "cancelled",
                format!("prescription {prescription} was cancelled by its issuer"),
            )]);
        }
        EvidenceStage::Issued => {
            return Err(vec![reason(
                "not-dispensed",
                format!("prescription {prescription} was never dispensed"),
            )]);
        }
        EvidenceStage::Dispensed => {}
    }
    if evidence
        .pharmacy
        .as_ref()
        .is_none_or(|p| p.org_id != claim.provider.org_id)
    {
        return Err(vec![reason(
            "other-pharmacy",
            format!("prescription {prescription} was dispensed by another pharmacy"),
        )]);
    }
    let mut problems = Vec::new();
    for line in claim
        .lines
        .iter()
        .filter(|l| l.line_type == ClaimLineType::Drug)
    {
        let dispensed = evidence.dispensed.iter().find(|d| {
            line.prescription_line_no.is_none_or(|n| n == d.line_no)
                && d.drug.code == line.service.code
        });
        let name = line
            .service
            .display
            .as_deref()
            .unwrap_or(&line.service.code);
        let Some(dispensed) = dispensed else {
            problems.push(reason(
                "not-dispensed",
                format!("{name} was not dispensed on prescription {prescription} (突合)"),
            ));
            continue;
        };
        let prescribed = evidence
            .prescribed
            .iter()
            .find(|p| p.line_no == dispensed.line_no);
        if let Some(prescribed) = prescribed
            && line.quantity > prescribed.quantity + 1e-9
        {
            problems.push(reason(
                "over-quantity",
                format!(
                    "{name}: {} {} billed, but {} {} were prescribed (突合)",
                    line.quantity, dispensed.unit, prescribed.quantity, prescribed.unit
                ),
            ));
        }
        days_by_line.insert(line.line_no, dispensed.days_supply);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What the tables allow for `line`: `Ok(None)` when they do not price it (a clinic's
/// procedure codes), `Err` when a drug or fee is billed that the tables do not list.
fn allowed_amount(
    line: &hixbus_contracts::ClaimLine,
    tariff: &Tariff,
    days: Option<Option<i32>>,
) -> Result<Option<i64>, String> {
    match line.line_type {
        ClaimLineType::Drug => {
            let Some(price) = tariff.price(&line.service) else {
                return Err(format!(
                    "{} ({}) is not in the NHI price table ({})",
                    line.service
                        .display
                        .as_deref()
                        .unwrap_or(&line.service.code),
                    line.service.code,
                    tariff.price_revision
                ));
            };
            Ok(Some(price.amount_jpy(line.quantity, days.flatten())))
        }
        ClaimLineType::Fee if line.service.system == FEE_SYSTEM => {
            let fees = &tariff.fees;
            let fee = [
                &fees.basic,
                &fees.guidance,
                &fees.internal_preparation,
                &fees.external_preparation,
            ]
            .into_iter()
            .chain(fees.management.iter().map(|m| &m.fee))
            .find(|f| f.code == line.service.code);
            match fee {
                Some(fee) => Ok(Some(fee.points * 10 * line.quantity.round() as i64)),
                None => Err(format!(
                    "fee {} is not in the fee table ({})",
                    line.service.code, fees.revision
                )),
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::{ClaimLine, Date, samples};

    const ROSTER: &str = include_str!("../../../infra/insurers/insurer-kenpo.roster.csv");

    /// A clinic's visit claim for the demo roster's first member: a fee line the tables price
    /// (調剤基本料1, 450 yen) and a procedure they do not.
    fn claim() -> ClaimSubmitted {
        let mut c = samples::claim_submitted("jp-insured:06123456:12345:67890:01");
        c.version = 1;
        c.member_id = "12345:67890:01".to_owned();
        c.service_start = Date::from_ymd(2026, 11, 2).unwrap();
        c.service_end = c.service_start;
        c.lines = vec![
            ClaimLine {
                line_no: 1,
                service: CodedConcept::new(FEE_SYSTEM, "dispensing-basic-1", None),
                quantity: 1.0,
                unit_price_jpy: Some(450),
                amount_jpy: 450,
                line_type: ClaimLineType::Fee,
                prescription_line_no: None,
                unit: None,
            },
            ClaimLine {
                line_no: 2,
                service: CodedConcept::new("urn:oid:1.2.392.100495.20.2.71", "160000410", None),
                quantity: 1.0,
                unit_price_jpy: Some(550),
                amount_jpy: 550,
                line_type: ClaimLineType::Other,
                prescription_line_no: None,
                unit: None,
            },
        ];
        c.total_amount_jpy = 1000;
        c.patient_copay_jpy = 300;
        c.public_expense_jpy = 0;
        c.insurer_share_jpy = 700;
        c
    }

    fn decide_with(c: &ClaimSubmitted, prior: Prior) -> Verdict {
        let roster = Roster::from_csv(ROSTER).unwrap();
        let tariff = Tariff::embedded().unwrap();
        let directory = Directory::default();
        decide(
            c,
            &Context {
                insurer_number: "06123456",
                roster: &roster,
                tariff: &tariff,
                directory: &directory,
                evidence: None,
                prior,
            },
        )
    }

    fn codes(v: &Verdict) -> Vec<&str> {
        v.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    #[test]
    fn a_claim_as_the_tables_and_the_roster_say_is_accepted_in_full() {
        let v = decide_with(&claim(), Prior::default());
        assert_eq!(v.outcome, ClaimOutcome::Approved, "{v:?}");
        assert_eq!((v.paid_jpy, v.reduced_by_jpy), (700, 0));
    }

    #[test]
    fn a_fee_above_the_table_is_reduced_to_it_and_the_share_follows() {
        let mut c = claim();
        c.lines[0].amount_jpy = 650;
        c.total_amount_jpy = 1200;
        c.patient_copay_jpy = 360;
        c.insurer_share_jpy = 840;
        let v = decide_with(&c, Prior::default());
        assert_eq!(v.outcome, ClaimOutcome::PartiallyApproved, "{v:?}");
        assert_eq!(codes(&v), ["price"]);
        assert_eq!(v.line_adjustments.len(), 1);
        assert_eq!(v.line_adjustments[0].paid_amount_jpy, 450);
        // Allowed 1,000 yen, of which the insurer's 70 %.
        assert_eq!((v.paid_jpy, v.reduced_by_jpy), (700, 140));
        assert!(v.reasons[0].display.as_deref().unwrap().contains("650"));
    }

    #[test]
    fn someone_not_covered_on_the_day_is_returned_with_why() {
        let mut c = claim();
        c.member_id = "12345:67892:00".to_owned(); // left in March 2024
        let v = decide_with(&c, Prior::default());
        assert_eq!(v.outcome, ClaimOutcome::Returned);
        assert_eq!(codes(&v), ["not-member"]);
        assert!(
            v.reasons[0]
                .display
                .as_deref()
                .unwrap()
                .contains("資格喪失")
        );
        c.member_id = "99999:1:00".to_owned();
        let v = decide_with(&c, Prior::default());
        assert!(
            v.reasons[0]
                .display
                .as_deref()
                .unwrap()
                .contains("資格なし")
        );
        assert_eq!(v.paid_jpy, 0);
    }

    #[test]
    fn sums_that_do_not_add_up_are_returned() {
        let mut c = claim();
        c.total_amount_jpy = 1100;
        let v = decide_with(&c, Prior::default());
        assert_eq!(v.outcome, ClaimOutcome::Returned);
        assert_eq!(codes(&v), ["arithmetic", "arithmetic"]);
    }

    #[test]
    fn duplicates_and_versions_are_returned_but_a_correction_of_a_returned_claim_is_not() {
        let v = decide_with(
            &claim(),
            Prior {
                same_content_as: Some("c-0".to_owned()),
                ..Prior::default()
            },
        );
        assert_eq!(codes(&v), ["duplicate"]);
        let mut second = claim();
        second.version = 2;
        let v = decide_with(
            &second,
            Prior {
                previous_version: Some(ClaimOutcome::Approved),
                ..Prior::default()
            },
        );
        assert_eq!(codes(&v), ["version"]);
        let v = decide_with(
            &second,
            Prior {
                previous_version: Some(ClaimOutcome::Returned),
                ..Prior::default()
            },
        );
        assert_eq!(v.outcome, ClaimOutcome::Approved, "{v:?}");
    }

    #[test]
    fn a_dispensing_claim_without_its_prescription_is_returned() {
        let mut c = claim();
        c.claim_type = ClaimType::Pharmacy;
        c.prescription_id = Some("rx-nowhere".to_owned());
        let v = decide_with(&c, Prior::default());
        assert_eq!(codes(&v), ["no-prescription"]);
    }
}
