//! The insurer's member roster: who is covered, when, with what share. Loaded at start from a
//! CSV file (one row per membership period) or a FHIR Bundle of JP Core `Coverage` resources
//! with their payor `Organization`s and beneficiary `Patient`s.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use hixbus_contracts::{Date, identity};
use serde_json::Value;

/// The most membership periods a roster may hold.
pub const MAX_MEMBERS: usize = 5_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("roster line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("roster Bundle: {0}")]
    Bundle(String),
    #[error("the roster has more than {MAX_MEMBERS} rows")]
    TooLarge,
}

/// One period of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub birth_date: Option<Date>,
    pub valid_from: Option<Date>,
    pub valid_to: Option<Date>,
    pub copay_percent: Option<i32>,
}

impl Membership {
    pub fn covers(&self, day: Date) -> bool {
        self.valid_from.is_none_or(|f| f <= day) && self.valid_to.is_none_or(|t| day <= t)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// By `insurer_number/symbol:number:branch`.
    members: HashMap<String, Vec<Membership>>,
}

fn key(insurer: &str, member_id: &str) -> String {
    format!("{insurer}/{member_id}")
}

use identity::normalized;

fn date(text: &str) -> Result<Option<Date>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text.get(..10).unwrap_or(text), "%Y-%m-%d")
        .map(|d| Some(Date::from(d)))
        .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)"))
}

impl Roster {
    /// Reads `path`: `.json` is a FHIR Bundle, anything else CSV.
    pub fn load(path: &Path) -> Result<Self, RosterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RosterError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_bundle(&text)
        } else {
            Self::from_csv(&text)
        }
    }

    pub fn from_csv(text: &str) -> Result<Self, RosterError> {
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(text.as_bytes());
        let mut roster = Roster::default();
        let mut rows = 0usize;
        for record in reader.records() {
            let record = record.map_err(|e| RosterError::Row {
                line: e.position().map_or(0, |p| p.line()),
                reason: e.to_string(),
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let row = |reason: String| RosterError::Row { line, reason };
            rows += 1;
            if rows > MAX_MEMBERS {
                return Err(RosterError::TooLarge);
            }
            let field = |i: usize| record.get(i).unwrap_or_default();
            let (insurer, number) = (normalized(field(0)), normalized(field(2)));
            if insurer.is_empty() || number.is_empty() {
                return Err(row(
                    "a member needs the insurer number and the number".to_owned()
                ));
            }
            let copay = match field(7) {
                "" => None,
                text => Some(
                    text.parse::<i32>()
                        .ok()
                        .filter(|p| (0..=100).contains(p))
                        .ok_or_else(|| row(format!("copay_percent {text:?} is not 0–100")))?,
                ),
            };
            let member_id = format!("{}:{number}:{}", normalized(field(1)), normalized(field(3)));
            roster
                .members
                .entry(key(&insurer, &member_id))
                .or_default()
                .push(Membership {
                    birth_date: date(field(4)).map_err(row)?,
                    valid_from: date(field(5)).map_err(row)?,
                    valid_to: date(field(6)).map_err(row)?,
                    copay_percent: copay,
                });
        }
        Ok(roster)
    }

    pub fn from_bundle(text: &str) -> Result<Self, RosterError> {
        let bundle: Value =
            serde_json::from_str(text).map_err(|e| RosterError::Bundle(e.to_string()))?;
        let resources: Vec<&Value> = bundle
            .get("entry")
            .and_then(Value::as_array)
            .ok_or_else(|| RosterError::Bundle("no entries".to_owned()))?
            .iter()
            .filter_map(|e| e.get("resource"))
            .collect();
        let find = |reference: Option<&str>| {
            let (kind, id) = reference?.split_once('/')?;
            resources.iter().copied().find(|r| {
                r.get("resourceType").and_then(Value::as_str) == Some(kind)
                    && r.get("id").and_then(Value::as_str) == Some(id)
            })
        };
        let mut roster = Roster::default();
        for coverage in resources
            .iter()
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Coverage"))
        {
            let payer = find(
                coverage
                    .pointer("/payor/0/reference")
                    .and_then(Value::as_str),
            );
            let patient = find(
                coverage
                    .pointer("/beneficiary/reference")
                    .and_then(Value::as_str),
            );
            let birth = patient
                .and_then(|p| p.get("birthDate"))
                .and_then(Value::as_str)
                .map(date)
                .transpose()
                .map_err(RosterError::Bundle)?
                .flatten();
            let Some(c) =
                payer.and_then(|payer| identity::coverage([(*coverage, payer)], birth, None))
            else {
                continue;
            };
            let period = |at: &str| {
                coverage
                    .pointer(at)
                    .and_then(Value::as_str)
                    .map(date)
                    .transpose()
                    .map(Option::flatten)
                    .map_err(RosterError::Bundle)
            };
            if roster.members.len() >= MAX_MEMBERS {
                return Err(RosterError::TooLarge);
            }
            roster
                .members
                .entry(key(&c.insurer_number, &c.member_id()))
                .or_default()
                .push(Membership {
                    birth_date: birth,
                    valid_from: period("/period/start")?,
                    valid_to: period("/period/end")?,
                    copay_percent: c.copay_percent,
                });
        }
        Ok(roster)
    }

    /// The membership of `member_id` at `insurer` covering `day`.
    pub fn on(&self, insurer: &str, member_id: &str, day: Date) -> Option<&Membership> {
        self.members
            .get(&key(insurer, member_id))?
            .iter()
            .find(|m| m.covers(day))
    }

    /// Whether the roster knows `member_id` at all (for a clearer reason).
    pub fn knows(&self, insurer: &str, member_id: &str) -> bool {
        self.members.contains_key(&key(insurer, member_id))
    }

    pub fn len(&self) -> usize {
        self.members.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../../infra/insurers/insurer-kenpo.roster.csv");

    #[test]
    fn the_demo_roster_covers_the_prescription_examples_patient() {
        let roster = Roster::from_csv(DEMO).unwrap();
        let day = Date::from_ymd(2026, 11, 29).unwrap();
        let member = roster.on("06123456", "12345:67890:01", day).unwrap();
        assert_eq!(member.copay_percent, Some(30));
        // Left in March 2024.
        assert!(roster.on("06123456", "12345:67892:00", day).is_none());
        assert!(roster.knows("06123456", "12345:67892:00"));
        assert!(
            roster
                .on(
                    "06123456",
                    "12345:67892:00",
                    Date::from_ymd(2024, 3, 31).unwrap()
                )
                .is_some()
        );
    }

    #[test]
    fn the_prescription_examples_coverage_is_a_roster_too() {
        let bundle = include_str!(
            "../../../tests/fixtures/fhir/jp-eprescription/Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json"
        );
        let roster = Roster::from_bundle(bundle).unwrap();
        assert_eq!(roster.len(), 1);
        let member = roster
            .on(
                "06123456",
                "12345:67890:01",
                Date::from_ymd(2026, 1, 1).unwrap(),
            )
            .unwrap();
        assert_eq!(member.birth_date, Date::from_ymd(1920, 2, 11));
    }

    #[test]
    fn a_bad_row_names_its_line() {
        let bad = "insurer_number,symbol,number,branch,birth_date,valid_from,valid_to,copay_percent\n06123456,1,2,3,1999-13-01,,,30\n";
        let e = Roster::from_csv(bad).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("not a date"), "{e}");
    }
}
