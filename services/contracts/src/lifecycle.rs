//! The rules of a prescription's life that every service must apply the same way: which issue
//! dates are plausible, how long a prescription may be dispensed, and the bounds on what a
//! prescription or a dispensing may say.
//!
//! The statuses and the moves between them live here too: the pharmacy's read model and the
//! clinic view derive their SQL conditions from [`Transition`], so the state machine is written
//! once.
//!
//! Dates are Japanese calendar dates. A prescription's validity (four days including the day of
//! issue, 療養担当規則 第20条) ends at midnight in Japan, whatever the servers' time zone, so
//! "today" is always the date in Japan Standard Time (UTC+9, no daylight saving).

use chrono::{FixedOffset, Utc};

use crate::time::{Date, Timestamp};

/// Valid for four days including the day of issue: the last valid day is issue + 3.
pub const VALID_DAYS_AFTER_ISSUE: i32 = 3;

/// At most this many medication lines per prescription. A Japanese prescription form carries a
/// handful of Rp groups; 60 lines is far beyond any real one, and keeps every event, alert and
/// screen that shows a prescription bounded.
pub const MAX_LINES: usize = 60;

/// The largest quantity a line may prescribe or dispense, in whatever unit (tablets, mL, g,
/// packs). 90 days × 3 × 10 units is 2,700; this leaves room for liquids in mL.
pub const MAX_QUANTITY: f64 = 100_000.0;

/// Days of treatment per line (投与日数): long-term prescriptions are typically up to 90 days;
/// a year bounds any legitimate one.
pub const MAX_DAYS_SUPPLY: i32 = 365;

/// How a dispensed quantity may exceed what was prescribed, when the pharmacist states why (a
/// change of strength, 規格変更, such as two 125 mg tablets for one 250 mg): at most twice.
pub const MAX_OVER_DISPENSE_FACTOR: f64 = 2.0;

/// Japan Standard Time (UTC+9, no daylight saving): the calendar of validity and expiry, and
/// the zone of HL7 times that name none.
pub fn japan() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| unreachable!("UTC+9 is a valid offset"))
}

/// Now, in Japan (HL7 ACKs are written in local time).
pub fn now_in_japan() -> chrono::DateTime<FixedOffset> {
    Utc::now().with_timezone(&japan())
}

/// Today's date in Japan.
pub fn today_in_japan() -> Date {
    Date::from(Utc::now().with_timezone(&japan()).date_naive())
}

/// The date in Japan at `at` (`None` only outside chrono's range).
pub fn date_in_japan(at: Timestamp) -> Option<Date> {
    at.to_datetime()
        .map(|t| Date::from(t.with_timezone(&japan()).date_naive()))
}

/// The last day a prescription issued on `issued_on` may be dispensed.
pub fn expires_on(issued_on: Date) -> Date {
    issued_on.plus_days(VALID_DAYS_AFTER_ISSUE)
}

/// Why an issue date is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IssueDateProblem {
    #[error("the issue date {issued} is after today ({today}) in Japan")]
    InTheFuture { issued: Date, today: Date },
    #[error("a prescription issued on {issued} expired on {expired}: it could never be dispensed")]
    AlreadyExpired { issued: Date, expired: Date },
}

/// A new prescription's issue date must be today or within its validity before today: a later
/// date is impossible, an earlier one is already expired. (Dates far outside this window also
/// once disabled the medication-safety check for everyone; see docs/reliability.md.)
pub fn check_issue_date(issued: Date, today: Date) -> Result<(), IssueDateProblem> {
    if issued > today {
        return Err(IssueDateProblem::InTheFuture { issued, today });
    }
    let expired = expires_on(issued);
    if expired < today {
        return Err(IssueDateProblem::AlreadyExpired { issued, expired });
    }
    Ok(())
}

/// Why a prescription cannot be dispensed today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotDispensable {
    #[error("it is not valid before its issue date {issued}")]
    NotYetValid { issued: Date },
    #[error("it expired on {expired}")]
    Expired { expired: Date },
}

/// Whether a prescription issued on `issued` (valid through `expires`) may be dispensed `today`.
pub fn check_dispensable(
    issued: Date,
    expires: Option<Date>,
    today: Date,
) -> Result<(), NotDispensable> {
    if today < issued {
        return Err(NotDispensable::NotYetValid { issued });
    }
    let expired = expires.unwrap_or_else(|| expires_on(issued));
    if today > expired {
        return Err(NotDispensable::Expired { expired });
    }
    Ok(())
}

/// Whether `value` is a quantity a line may carry.
pub fn plausible_quantity(value: f64) -> bool {
    value.is_finite() && value > 0.0 && value <= MAX_QUANTITY
}

/// Whether `days` is a days supply a line may carry.
pub fn plausible_days_supply(days: i32) -> bool {
    (1..=MAX_DAYS_SUPPLY).contains(&days)
}

/// Where a prescription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Issued, in no pharmacy's hands yet (or addressed to one that has not acted).
    Issued,
    /// An open prescription a pharmacy took with the patient's access code.
    Claimed,
    /// A pharmacy is publishing its dispensing right now; nobody else may start (the pharmacy
    /// service's own state; the clinic never sees it).
    Dispensing,
    Dispensed,
    Cancelled,
}

/// Stored text that is not a status: an error, never quietly `Issued` (which would make a
/// prescription look dispensable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown prescription status {0:?}")]
pub struct UnknownStatus(pub String);

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Issued,
        Status::Claimed,
        Status::Dispensing,
        Status::Dispensed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Issued => "issued",
            Status::Claimed => "claimed",
            Status::Dispensing => "dispensing",
            Status::Dispensed => "dispensed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStatus(text.to_owned()))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move of a prescription from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A pharmacy takes an open prescription with the access code.
    Claim,
    /// Publishing the claim failed: the prescription is open again.
    Unclaim,
    /// A pharmacy takes the right to dispense (before publishing its dispensing).
    BeginDispensing,
    /// Publishing the dispensing failed: the right is given back.
    AbortDispensing,
    /// A dispensing is recorded (from the pharmacy's own request or from the topic). The
    /// pharmacy that dispensed decided: it stands whatever the record said before, even over a
    /// cancellation a view saw first.
    RecordDispensing,
    /// The issuer withdraws it, unless a pharmacy has begun dispensing.
    Cancel,
}

impl Transition {
    pub const ALL: [Transition; 6] = [
        Transition::Claim,
        Transition::Unclaim,
        Transition::BeginDispensing,
        Transition::AbortDispensing,
        Transition::RecordDispensing,
        Transition::Cancel,
    ];

    /// The statuses this move may start from.
    pub fn from(self) -> &'static [Status] {
        use Status::*;
        match self {
            Transition::Claim => &[Issued],
            Transition::Unclaim => &[Claimed],
            Transition::BeginDispensing | Transition::Cancel => &[Issued, Claimed],
            Transition::AbortDispensing => &[Dispensing],
            Transition::RecordDispensing => &Status::ALL,
        }
    }

    /// The status after the move from `from`, or `None` if it may not happen then.
    /// `open` says whether the prescription is open (claimable; no target pharmacy), which
    /// decides where an aborted dispensing returns to.
    pub fn apply(self, from: Status, open: bool) -> Option<Status> {
        if !self.from().contains(&from) {
            return None;
        }
        Some(match self {
            Transition::Claim => Status::Claimed,
            Transition::Unclaim => Status::Issued,
            Transition::BeginDispensing => Status::Dispensing,
            Transition::AbortDispensing if open => Status::Claimed,
            Transition::AbortDispensing => Status::Issued,
            Transition::RecordDispensing => Status::Dispensed,
            Transition::Cancel => Status::Cancelled,
        })
    }

    /// The SQL that sets a `status` column to where this move leads (an aborted dispensing:
    /// back to claimed for an open prescription, to issued for one addressed to a pharmacy,
    /// told apart by the `target_pharmacy` column).
    pub fn sql_target(self) -> String {
        match self {
            Transition::AbortDispensing => format!(
                "CASE WHEN target_pharmacy IS NULL THEN '{}' ELSE '{}' END",
                Status::Claimed,
                Status::Issued
            ),
            other => format!(
                "'{}'",
                other
                    .apply(other.from()[0], true)
                    .unwrap_or_else(|| unreachable!("a move applies to its first status"))
            ),
        }
    }

    /// The SQL value of a `status` column after this move where it is allowed, the status as it
    /// was where it is not: for a record that keeps the event either way (a view that records a
    /// claim's pharmacy, or a cancellation request that came too late).
    pub fn sql_case(self) -> String {
        format!(
            "CASE WHEN {} THEN {} ELSE status END",
            self.sql_condition(),
            self.sql_target()
        )
    }

    /// The SQL condition on a `status` column that admits this move: `status IN ('…', …)`.
    pub fn sql_condition(self) -> String {
        let statuses: Vec<String> = self
            .from()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("status IN ({})", statuses.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: i32) -> Date {
        Date::from_ymd(2026, 11, 25).unwrap().plus_days(n)
    }

    #[test]
    fn an_issue_date_is_today_or_within_its_four_days() {
        let today = day(0);
        assert!(check_issue_date(today, today).is_ok());
        assert!(check_issue_date(day(-3), today).is_ok(), "last valid day");
        assert_eq!(
            check_issue_date(day(-4), today),
            Err(IssueDateProblem::AlreadyExpired {
                issued: day(-4),
                expired: day(-1)
            })
        );
        assert!(matches!(
            check_issue_date(day(1), today),
            Err(IssueDateProblem::InTheFuture { .. })
        ));
        let far = Date::from_ymd(9999, 12, 31).unwrap();
        assert!(check_issue_date(far, today).is_err());
        let zero = Date::from_ymd(0, 1, 1).unwrap();
        assert!(check_issue_date(zero, today).is_err());
    }

    #[test]
    fn a_prescription_is_dispensable_from_its_issue_date_through_its_expiry() {
        assert!(check_dispensable(day(0), Some(day(3)), day(3)).is_ok());
        assert_eq!(
            check_dispensable(day(0), Some(day(3)), day(4)),
            Err(NotDispensable::Expired { expired: day(3) })
        );
        assert_eq!(
            check_dispensable(day(1), None, day(0)),
            Err(NotDispensable::NotYetValid { issued: day(1) })
        );
    }

    #[test]
    fn the_japanese_date_turns_at_midnight_in_japan_not_utc() {
        // 2026-11-25 15:30 UTC is 2026-11-26 00:30 in Japan.
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-25T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(date_in_japan(Timestamp::from(at)), Some(day(1)));
    }

    /// Every (status, move) pair: where it leads, or that it is refused.
    #[test]
    fn every_transition_from_every_status() {
        use Status::*;
        use Transition::*;
        // Outcomes from: issued, claimed, dispensing, dispensed, cancelled.
        let table: [(Transition, [Option<Status>; 5]); 6] = [
            (Claim, [Some(Claimed), None, None, None, None]),
            (Unclaim, [None, Some(Issued), None, None, None]),
            (
                BeginDispensing,
                [Some(Dispensing), Some(Dispensing), None, None, None],
            ),
            (AbortDispensing, [None, None, Some(Claimed), None, None]),
            (RecordDispensing, [Some(Dispensed); 5]),
            (Cancel, [Some(Cancelled), Some(Cancelled), None, None, None]),
        ];
        for (transition, outcomes) in table {
            for (from, expected) in Status::ALL.into_iter().zip(outcomes) {
                assert_eq!(
                    transition.apply(from, true),
                    expected,
                    "{transition:?} from {from}"
                );
            }
        }
        // An addressed prescription goes back to issued, an open one stays claimed.
        assert_eq!(AbortDispensing.apply(Dispensing, false), Some(Issued));
        assert_eq!(Cancel.sql_condition(), "status IN ('issued', 'claimed')");
        assert_eq!(Cancel.sql_target(), "'cancelled'");
        assert_eq!(
            AbortDispensing.sql_target(),
            "CASE WHEN target_pharmacy IS NULL THEN 'claimed' ELSE 'issued' END"
        );
        assert_eq!(
            RecordDispensing.sql_condition(),
            "status IN ('issued', 'claimed', 'dispensing', 'dispensed', 'cancelled')"
        );
    }

    #[test]
    fn stored_statuses_round_trip_and_unknown_text_is_an_error() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Ok(status));
        }
        assert_eq!(
            Status::parse("Issued"),
            Err(UnknownStatus("Issued".to_owned()))
        );
        assert!(Status::parse("").is_err());
    }

    #[test]
    fn quantities_and_days_are_bounded() {
        assert!(plausible_quantity(21.0));
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e308,
            MAX_QUANTITY * 1.01,
        ] {
            assert!(!plausible_quantity(bad), "{bad}");
        }
        assert!(plausible_days_supply(7));
        for bad in [0, -7, 366, i32::MAX] {
            assert!(!plausible_days_supply(bad), "{bad}");
        }
    }
}
