//! A pharmacy's dispensing priced into its claim (調剤報酬), from what was prescribed and what
//! was handed over: nobody types it again.
//!
//! Each dispensed line is priced as its own unit of account (剤): an internal medicine (a line
//! with days of supply) by one day's quantity times the days, an external one by its whole
//! quantity, each in points by the fifteen-yen rule ([`crate::tariff::DrugPrice::amount_jpy`]), at the price of
//! what was handed over (the generic's, when substituted). The fees are the fee table's.

use hixbus_contracts::{
    ClaimLine, ClaimLineType, ClaimSubmitted, ClaimType, CodedConcept, Coverage, Date, Envelope,
    PrescriptionDispensed, PrescriptionIssued,
};

use crate::shares;
use crate::tariff::{Fee, Tariff};

/// Why a dispensing cannot be priced; the pharmacy sees it on the claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpriced {
    #[error("the prescription names no health insurance (no Coverage), so there is no one to bill")]
    NoCoverage,
    #[error("insurer {0} is not on the exchange")]
    UnknownInsurer(String),
    #[error("{drug} ({code}) is not in the drug price table ({revision})")]
    NoPrice {
        drug: String,
        code: String,
        revision: String,
    },
    #[error("{drug} is priced per {table} but was dispensed in {dispensed}")]
    Unit {
        drug: String,
        table: String,
        dispensed: String,
    },
    #[error("line {0} of the dispensing is not on the prescription")]
    NoSuchLine(i32),
}

/// The claim id of a prescription's dispensing claim: one dispensing, one claim.
pub fn claim_id(prescription_id: &str) -> String {
    format!("dispensing:{prescription_id}")
}

/// Prices `dispensed` of `issued` into a claim; the envelope is the caller's.
pub fn claim(
    issued: &PrescriptionIssued,
    dispensed: &PrescriptionDispensed,
    tariff: &Tariff,
    envelope: Envelope,
    service_date: Date,
) -> Result<ClaimSubmitted, Unpriced> {
    let coverage: &Coverage = issued.coverage.as_ref().ok_or(Unpriced::NoCoverage)?;
    let insurer = coverage
        .insurer_org
        .clone()
        .ok_or_else(|| Unpriced::UnknownInsurer(coverage.insurer_number.clone()))?;
    let mut lines = Vec::new();
    let (mut internal, mut external) = (Vec::new(), 0usize);
    for d in &dispensed.lines {
        let prescribed = issued
            .lines
            .iter()
            .find(|l| l.line_no == d.prescription_line_no)
            .ok_or(Unpriced::NoSuchLine(d.prescription_line_no))?;
        let codes: Vec<&CodedConcept> = if d.substituted {
            vec![&d.drug]
        } else {
            std::iter::once(&d.drug)
                .chain(&prescribed.other_codes)
                .collect()
        };
        let price = tariff.price_any(codes).ok_or_else(|| Unpriced::NoPrice {
            drug: d
                .drug
                .display
                .clone()
                .unwrap_or_else(|| d.drug.code.clone()),
            code: d.drug.code.clone(),
            revision: tariff.price_revision.clone(),
        })?;
        if price.unit.trim() != d.quantity.unit.trim() {
            return Err(Unpriced::Unit {
                drug: price.name.clone(),
                table: price.unit.clone(),
                dispensed: d.quantity.unit.clone(),
            });
        }
        match d.days_supply.filter(|days| *days > 0) {
            Some(days) => internal.push(days),
            None => external += 1,
        }
        lines.push(ClaimLine {
            line_no: 0,
            service: d.drug.clone(),
            quantity: d.quantity.value,
            unit_price_jpy: None,
            amount_jpy: price.amount_jpy(d.quantity.value, d.days_supply),
            line_type: ClaimLineType::Drug,
            prescription_line_no: Some(d.prescription_line_no),
            unit: Some(d.quantity.unit.clone()),
        });
    }
    let fees = &tariff.fees;
    let mut fee = |fee: &Fee| lines.push(fee_line(fee));
    fee(&fees.basic);
    for _ in 0..internal
        .len()
        .min(fees.internal_preparation.max_lines.unwrap_or(3))
    {
        fee(&fees.internal_preparation);
    }
    for days in internal.iter().take(fees.management_max_lines) {
        if let Some(management) = fees.management_for(*days) {
            fee(management);
        }
    }
    for _ in 0..external.min(fees.external_preparation.max_lines.unwrap_or(3)) {
        fee(&fees.external_preparation);
    }
    fee(&fees.guidance);
    for (n, line) in lines.iter_mut().enumerate() {
        line.line_no = i32::try_from(n + 1).unwrap_or(i32::MAX);
    }
    let total: i64 = lines.iter().map(|l| l.amount_jpy).sum();
    let split = shares::split(total, coverage, service_date);
    Ok(ClaimSubmitted {
        envelope,
        claim_id: claim_id(&issued.prescription_id),
        insurer_org: insurer,
        member_id: coverage.member_id(),
        provider: dispensed.pharmacy.clone(),
        service_start: service_date,
        service_end: service_date,
        diagnoses: Vec::new(),
        lines,
        total_amount_jpy: total,
        patient_copay_jpy: split.patient_jpy,
        claim_type: ClaimType::Pharmacy,
        version: 1,
        replaces_event_id: None,
        prescription_id: Some(issued.prescription_id.clone()),
        prescription_issuer_org: Some(issued.issuer.org_id.clone()),
        // What billing needs of the insurance: not the sex the prescription carries for
        // statistics.
        coverage: Some(Coverage {
            sex: None,
            ..coverage.clone()
        }),
        insurer_share_jpy: split.insurer_jpy,
        public_expense_jpy: split.public_expense_jpy,
        tariff: Some(tariff.label()),
    })
}

fn fee_line(fee: &Fee) -> ClaimLine {
    ClaimLine {
        line_no: 0,
        service: fee.concept(),
        quantity: 1.0,
        unit_price_jpy: Some(fee.points * 10),
        amount_jpy: fee.points * 10,
        line_type: ClaimLineType::Fee,
        prescription_line_no: None,
        unit: Some("回".to_owned()),
    }
}
