//! Who pays what of a claim's total: the patient's share by the Coverage (or, when it is
//! silent, by the age rule), a public-expense programme's part, and the insurer's rest. Shares
//! are rounded to 10 yen as a pharmacy's or clinic's counter collects them (10円未満四捨五入).

use chrono::Datelike;
use hixbus_contracts::{Coverage, Date};

/// How a total splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// The patient's share percentage applied (insurance), before any public programme.
    pub copay_percent: i32,
    pub patient_jpy: i64,
    pub public_expense_jpy: i64,
    pub insurer_jpy: i64,
}

/// The patient's share when the Coverage does not state one, by age on the day of service:
/// 20 % before age 6, 30 % to 69, 20 % from 70 to 74, 10 % from 75 (後期高齢者). Income-based
/// higher shares for those over 70 are only known from the Coverage itself.
pub fn copay_by_age(birth: Option<Date>, on: Date) -> i32 {
    let Some(age) = birth.and_then(|b| age_on(b, on)) else {
        return 30;
    };
    match age {
        ..6 => 20,
        6..70 => 30,
        70..75 => 20,
        _ => 10,
    }
}

fn age_on(birth: Date, on: Date) -> Option<i32> {
    let (birth, on) = (birth.to_naive_date()?, on.to_naive_date()?);
    let mut age = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    Some(age)
}

/// Rounds yen to the nearest 10 (5 rounds up).
pub fn round_to_10(yen: i64) -> i64 {
    (yen + 5).div_euclid(10) * 10
}

/// `percent` of `total` yen, rounded to 10 yen (from the exact amount, not a rounded yen).
fn share(total: i64, percent: i32) -> i64 {
    (total * i64::from(percent) + 500).div_euclid(1000) * 10
}

/// Splits `total` yen for a service on `on` under `coverage`.
pub fn split(total: i64, coverage: &Coverage, on: Date) -> Shares {
    let copay_percent = coverage
        .copay_percent
        .filter(|p| (0..=100).contains(p))
        .unwrap_or_else(|| copay_by_age(coverage.birth_date, on));
    let patient_insured = share(total, copay_percent);
    // A programme in force on the day pays what lies between the insurance share and its own.
    let programme = coverage
        .public_programs
        .iter()
        .filter(|p| p.covers(on) && (0..=100).contains(&p.copay_percent))
        .map(|p| p.copay_percent)
        .min()
        .filter(|p| *p < copay_percent);
    let patient = programme.map_or(patient_insured, |p| share(total, p));
    Shares {
        copay_percent,
        patient_jpy: patient,
        public_expense_jpy: patient_insured - patient,
        insurer_jpy: total - patient_insured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::from_ymd(y, m, d).unwrap()
    }

    #[test]
    fn shares_round_to_ten_yen_and_add_up() {
        let mut coverage = samples::coverage();
        coverage.public_programs.clear();
        let s = split(1740, &coverage, day(2026, 11, 29));
        assert_eq!(s.patient_jpy, 520); // 522 → 520
        assert_eq!(s.insurer_jpy, 1220);
        assert_eq!(s.public_expense_jpy, 0);
        let s = split(1750, &coverage, day(2026, 11, 29));
        assert_eq!(s.patient_jpy, 530); // 525 → 530
        assert_eq!(s.patient_jpy + s.insurer_jpy, 1750);
    }

    #[test]
    fn a_programme_in_force_pays_down_to_its_own_share() {
        let coverage = samples::coverage(); // 30 %, programme 10 % during 2024
        let s = split(10_000, &coverage, day(2024, 6, 1));
        assert_eq!(
            (s.patient_jpy, s.public_expense_jpy, s.insurer_jpy),
            (1000, 2000, 7000)
        );
        let after = split(10_000, &coverage, day(2025, 1, 1));
        assert_eq!(
            (
                after.patient_jpy,
                after.public_expense_jpy,
                after.insurer_jpy
            ),
            (3000, 0, 7000)
        );
    }

    #[test]
    fn without_a_stated_share_age_decides() {
        let on = day(2026, 4, 1);
        assert_eq!(copay_by_age(Some(day(2021, 4, 2)), on), 20); // 4
        assert_eq!(copay_by_age(Some(day(2020, 4, 1)), on), 30); // 6 today
        assert_eq!(copay_by_age(Some(day(1956, 4, 2)), on), 30); // 69
        assert_eq!(copay_by_age(Some(day(1956, 4, 1)), on), 20); // 70 today
        assert_eq!(copay_by_age(Some(day(1951, 4, 2)), on), 20); // 74
        assert_eq!(copay_by_age(Some(day(1951, 4, 1)), on), 10); // 75 today
        assert_eq!(copay_by_age(None, on), 30);
        let mut coverage = samples::coverage();
        coverage.copay_percent = None;
        coverage.birth_date = Some(day(1920, 2, 11));
        assert_eq!(split(1000, &coverage, on).patient_jpy, 100);
    }
}
