//! Kafka record headers the runtime writes and reads.
//!
//! Consumers never need them to decode (the Confluent framing carries the schema id), but they
//! let operators, routers and non-hixbus consumers see what a record is without decoding it.

use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const EVENT_TYPE: &str = "hixbus.event_type";
pub const EVENT_ID: &str = "hixbus.event_id";
pub const SCHEMA_ID: &str = "hixbus.schema_id";
pub const PRODUCER_ORG: &str = "hixbus.producer_org";
/// W3C Trace Context (<https://www.w3.org/TR/trace-context/>), as OpenTelemetry's Kafka
/// instrumentations in other languages write it.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Headers as owned `(name, value)` pairs: easy to copy between records and to print.
pub type HeaderList = Vec<(String, Vec<u8>)>;

pub fn to_list<H: Headers + ?Sized>(headers: Option<&H>) -> HeaderList {
    let Some(headers) = headers else {
        return Vec::new();
    };
    (0..headers.count())
        .filter_map(|i| headers.try_get(i))
        .map(|h| {
            (
                h.key.to_owned(),
                h.value.map(<[u8]>::to_vec).unwrap_or_default(),
            )
        })
        .collect()
}

pub fn to_owned_headers(list: &HeaderList) -> OwnedHeaders {
    list.iter().fold(
        OwnedHeaders::new_with_capacity(list.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

/// The last value of header `name` as text, if present and UTF-8.
pub fn get<'a>(list: &'a HeaderList, name: &str) -> Option<&'a str> {
    list.iter()
        .rev()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// Replaces every header called `name` with one holding `value`.
pub fn set(list: &mut HeaderList, name: &str, value: impl Into<Vec<u8>>) {
    list.retain(|(key, _)| key != name);
    list.push((name.to_owned(), value.into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_the_round_trip_through_rdkafka() {
        let mut list = vec![(EVENT_TYPE.to_owned(), b"PrescriptionIssued".to_vec())];
        set(&mut list, SCHEMA_ID, "7");
        set(&mut list, SCHEMA_ID, "8");
        let owned = to_owned_headers(&list);
        let back = to_list(Some(&owned));
        assert_eq!(back, list);
        assert_eq!(get(&back, SCHEMA_ID), Some("8"));
        assert_eq!(get(&back, EVENT_TYPE), Some("PrescriptionIssued"));
        assert_eq!(get(&back, "missing"), None);
    }
}
