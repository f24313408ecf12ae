//! Critical values: results a clinician must hear of at once, not when the report is next read.
//!
//! A result is critical when its laboratory flagged it critically low or high (HL7 v2 OBX-8
//! `LL`/`HH`, FHIR `LL`/`HH`), or when its value crosses a limit in [`LIMITS`]: laboratories do
//! not all flag, and a potassium of 6.5 mmol/L must alert whoever reported it. A limit applies
//! only in the unit it is written in (no conversion is guessed); a value in another unit is judged
//! by its flag alone. The table is short on purpose: the analytes whose critical limits are the
//! same in every adult critical-value list we know of (Japanese Society of Laboratory Medicine's
//! パニック値 examples, CAP's surveys).

use crate::systems::{JLAC10, LOINC};
use crate::{CodedConcept, Interpretation, Observation};

/// One analyte's critical limits.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub analyte: &'static str,
    /// JLAC10 analyte codes (the first five characters of the 17-character code).
    pub jlac10: &'static [&'static str],
    pub loinc: &'static [&'static str],
    /// Units the limits are in, compared case-insensitively.
    pub units: &'static [&'static str],
    /// Critical at or below this.
    pub low: f64,
    /// Critical at or above this.
    pub high: f64,
}

pub const LIMITS: &[Limit] = &[
    Limit {
        analyte: "potassium",
        jlac10: &["3H015"],
        loinc: &["2823-3", "6298-4"],
        units: &["mmol/L", "mEq/L"],
        low: 2.5,
        high: 6.0,
    },
    Limit {
        analyte: "sodium",
        jlac10: &["3H010"],
        loinc: &["2951-2", "2947-0"],
        units: &["mmol/L", "mEq/L"],
        low: 120.0,
        high: 160.0,
    },
    Limit {
        analyte: "glucose",
        jlac10: &["3D010"],
        loinc: &["2345-7", "2339-0"],
        units: &["mg/dL"],
        low: 40.0,
        high: 500.0,
    },
];

/// Why a result is critical.
#[derive(Debug, Clone, PartialEq)]
pub enum Critical {
    /// The laboratory flagged it (`LL` or `HH`).
    Flagged(Interpretation),
    /// Its value crossed a limit of [`LIMITS`].
    Limit {
        analyte: &'static str,
        value: f64,
        limit: f64,
    },
}

impl Critical {
    pub fn describe(&self) -> String {
        match self {
            Critical::Flagged(Interpretation::CriticallyLow) => {
                "flagged critically low (LL)".into()
            }
            Critical::Flagged(_) => "flagged critically high (HH)".into(),
            Critical::Limit {
                analyte,
                value,
                limit,
            } if value <= limit => format!("{analyte} {value} at or below the critical {limit}"),
            Critical::Limit {
                analyte,
                value,
                limit,
            } => format!("{analyte} {value} at or above the critical {limit}"),
        }
    }
}

/// Whether `result` is critical, and why.
pub fn critical(result: &Observation) -> Option<Critical> {
    if matches!(
        result.interpretation,
        Interpretation::CriticallyLow | Interpretation::CriticallyHigh
    ) {
        return Some(Critical::Flagged(result.interpretation));
    }
    let value = result.value_numeric?;
    let unit = result.unit.as_deref()?.trim();
    let limit = LIMITS.iter().find(|l| {
        l.units.iter().any(|u| u.eq_ignore_ascii_case(unit))
            && std::iter::once(&result.code)
                .chain(&result.other_codes)
                .any(|c| is_analyte(c, l))
    })?;
    if value <= limit.low {
        Some(Critical::Limit {
            analyte: limit.analyte,
            value,
            limit: limit.low,
        })
    } else if value >= limit.high {
        Some(Critical::Limit {
            analyte: limit.analyte,
            value,
            limit: limit.high,
        })
    } else {
        None
    }
}

fn is_analyte(code: &CodedConcept, limit: &Limit) -> bool {
    match code.system.as_str() {
        JLAC10 => limit
            .jlac10
            .iter()
            .any(|a| code.code.get(..5) == Some(*a) && code.code.len() == 17),
        LOINC => limit.loinc.contains(&code.code.as_str()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(system: &str, code: &str, value: f64, unit: &str) -> Observation {
        Observation {
            code: CodedConcept {
                system: system.into(),
                code: code.into(),
                display: None,
            },
            value_numeric: Some(value),
            value_coded: None,
            value_text: None,
            unit: Some(unit.into()),
            reference_range: None,
            interpretation: Interpretation::Unknown,
            other_codes: Vec::new(),
        }
    }

    #[test]
    fn potassium_at_the_limit_is_critical_by_jlac10_and_loinc() {
        let k = result(JLAC10, "3H015000002327101", 6.0, "mmol/L");
        assert_eq!(
            critical(&k),
            Some(Critical::Limit {
                analyte: "potassium",
                value: 6.0,
                limit: 6.0
            })
        );
        assert!(critical(&result(LOINC, "2823-3", 2.4, "meq/l")).is_some());
        assert_eq!(critical(&result(LOINC, "2823-3", 5.9, "mmol/L")), None);
        assert_eq!(critical(&result(LOINC, "2823-3", 2.6, "mmol/L")), None);
    }

    #[test]
    fn a_limit_needs_its_unit_and_its_analyte() {
        // 6.5 in another unit is not converted; a 17-digit code of another analyte is not K.
        assert_eq!(critical(&result(LOINC, "2823-3", 6.5, "mg/dL")), None);
        assert_eq!(
            critical(&result(JLAC10, "3H016000002327101", 6.5, "mmol/L")),
            None
        );
        assert_eq!(
            critical(&result("urn:hixbus:hl7v2:99L", "3H015", 6.5, "mmol/L")),
            None
        );
        let mut local = result("urn:hixbus:hl7v2:99L", "K01", 6.5, "mmol/L");
        local.other_codes.push(CodedConcept {
            system: JLAC10.into(),
            code: "3H015000002327101".into(),
            display: None,
        });
        assert!(critical(&local).is_some(), "found by its other code");
    }

    #[test]
    fn a_laboratory_flag_is_critical_whatever_the_value() {
        let mut text = result("urn:hixbus:hl7v2:99L", "X", 1.0, "U/L");
        text.value_numeric = None;
        text.interpretation = Interpretation::CriticallyHigh;
        assert_eq!(
            critical(&text),
            Some(Critical::Flagged(Interpretation::CriticallyHigh))
        );
        text.interpretation = Interpretation::High;
        assert_eq!(critical(&text), None);
    }
}
