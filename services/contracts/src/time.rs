//! Avro's `timestamp-millis` and `date` logical types as Rust newtypes.
//!
//! apache-avro's derive has no mapping for chrono types, and a bare `i64` would derive a plain
//! `long`, silently dropping the logical type that Java and Python clients rely on to hand their
//! users real timestamps. These newtypes carry the logical type into the derived schema (checked
//! against the `.avsc` files by the drift test) while serializing as the plain integers Avro
//! stores.

use std::collections::HashSet;

use apache_avro::AvroSchemaComponent;
use apache_avro::schema::{Name, NamespaceRef, Schema};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// A UTC instant with millisecond precision (`timestamp-millis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// `None` only for instants outside chrono's range (hundreds of thousands of years away).
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.0)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value.timestamp_millis())
    }
}

impl AvroSchemaComponent for Timestamp {
    fn get_schema_in_ctxt(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
        Schema::TimestampMillis
    }

    fn get_record_fields_in_ctxt(
        _: &mut HashSet<Name>,
        _: NamespaceRef,
    ) -> Option<Vec<apache_avro::schema::RecordField>> {
        None
    }
}

/// A calendar date without time zone (`date`: days since 1970-01-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Date(i32);

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

impl Date {
    pub const fn from_days_since_epoch(days: i32) -> Self {
        Self(days)
    }

    pub const fn days_since_epoch(self) -> i32 {
        self.0
    }

    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, day).map(Self::from)
    }

    /// `None` only for dates outside chrono's range.
    pub fn to_naive_date(self) -> Option<NaiveDate> {
        NaiveDate::from_num_days_from_ce_opt(self.0.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
    }

    /// The date `days` later (earlier when negative), saturating at the ends of the range.
    pub fn plus_days(self, days: i32) -> Self {
        Self(self.0.saturating_add(days))
    }
}

/// `YYYY-MM-DD`, or the day count when the date is outside chrono's range.
impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_naive_date() {
            Some(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            None => write!(f, "day {} since 1970-01-01", self.0),
        }
    }
}

impl From<NaiveDate> for Date {
    fn from(value: NaiveDate) -> Self {
        Self(value.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
    }
}

impl AvroSchemaComponent for Date {
    fn get_schema_in_ctxt(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
        Schema::Date
    }

    fn get_record_fields_in_ctxt(
        _: &mut HashSet<Name>,
        _: NamespaceRef,
    ) -> Option<Vec<apache_avro::schema::RecordField>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_counts_days_from_the_unix_epoch() {
        assert_eq!(Date::from_ymd(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(
            Date::from_ymd(2024, 4, 1).unwrap().days_since_epoch(),
            19_814
        );
        let d = Date::from_days_since_epoch(19_814);
        assert_eq!(d.to_naive_date(), NaiveDate::from_ymd_opt(2024, 4, 1));
    }

    #[test]
    fn timestamp_round_trips_through_chrono() {
        let t = Timestamp::from_unix_millis(1_711_929_600_123);
        assert_eq!(Timestamp::from(t.to_datetime().unwrap()), t);
    }
}
