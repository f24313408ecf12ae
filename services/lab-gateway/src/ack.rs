//! The HL7 v2 ACK a lab system gets for every message: `AA` once the event is durably on the
//! bus, `AE` with ERR locating the problem, `AR` for a message hixbus does not take. It is
//! written in the character set the message came in, so the sender reads it as it writes.

use crate::charset::Charset;
use crate::hl7::{Header, Problem, Refusal};

/// MSA-1 (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Accept,
    Error,
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

impl From<Refusal> for AckCode {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Error => AckCode::Error,
            Refusal::Reject => AckCode::Reject,
        }
    }
}

/// Text made safe for a field: delimiters escaped, line breaks removed.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// MSH-18 echoed as the sender wrote it (a repeating field: `~` stays), only the characters
/// character-set names use.
fn charset_names(msh18: &str) -> String {
    msh18
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '~' | '-' | '_' | '.' | '/'))
        .collect()
}

/// The ACK for `header` (what could be read of MSH) with `code`, `problem` in ERR if any, and
/// `text` in MSA-3.
pub fn ack(
    header: &Header,
    code: AckCode,
    problem: Option<&Problem>,
    text: &str,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> String {
    let trigger = if header.trigger.is_empty() {
        String::new()
    } else {
        escape(&header.trigger)
    };
    let version = if header.version.starts_with("2.") {
        escape(&header.version)
    } else {
        "2.5".to_owned()
    };
    let mut ack = format!(
        "MSH|^~\\&|HIXBUS|HIXBUS|{}|{}|{}||ACK^{}^ACK|{}|P|{}||||||{}\rMSA|{}|{}|{}\r",
        escape(&header.sending_application),
        escape(&header.sending_facility),
        now.format("%Y%m%d%H%M%S%z"),
        trigger,
        uuid::Uuid::now_v7().simple(),
        version,
        charset_names(&header.msh18),
        code.as_str(),
        escape(&header.control_id),
        escape(text),
    );
    if let Some(p) = problem {
        // ERR-2 location (segment^sequence^field), ERR-3 HL7 error code, ERR-4 severity,
        // ERR-8 the message for the user.
        let location = if p.field > 0 {
            format!("{}^{}^{}", p.segment, p.sequence.max(1), p.field)
        } else {
            format!("{}^{}", p.segment, p.sequence.max(1))
        };
        ack.push_str(&format!(
            "ERR||{}|{}^{}^HL70357|E||||{}\r",
            location,
            p.code,
            error_name(p.code),
            escape(&p.reason)
        ));
    }
    ack
}

fn error_name(code: u16) -> &'static str {
    match code {
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        203 => "Unsupported version id",
        206 => "Application record locked",
        207 => "Application internal error",
        _ => "Error",
    }
}

/// The ACK as bytes in `charset` (the ACK itself is ASCII but for echoed text).
pub fn encode(ack: &str, charset: Charset) -> Vec<u8> {
    match charset {
        Charset::Iso2022Jp => encoding_rs::ISO_2022_JP.encode(ack).0.into_owned(),
        Charset::Latin1 => encoding_rs::WINDOWS_1252.encode(ack).0.into_owned(),
        Charset::Ascii | Charset::Utf8 => ack.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            control_id: "MSG-1".to_owned(),
            sending_application: "LIS".to_owned(),
            sending_facility: "LAB|X".to_owned(),
            receiving_facility: String::new(),
            trigger: "R22".to_owned(),
            version: "2.5".to_owned(),
            msh18: "~ISO IR87".to_owned(),
        }
    }

    fn now() -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00+09:00").unwrap()
    }

    #[test]
    fn an_accept_echoes_the_control_id_and_escapes_what_it_echoes() {
        let ack = ack(&header(), AckCode::Accept, None, "published", now());
        let segments: Vec<&str> = ack.split('\r').filter(|s| !s.is_empty()).collect();
        assert_eq!(segments.len(), 2);
        assert!(segments[0].starts_with(
            "MSH|^~\\&|HIXBUS|HIXBUS|LIS|LAB\\F\\X|20261125100000+0900||ACK^R22^ACK|"
        ));
        assert!(segments[0].ends_with("|P|2.5||||||~ISO IR87"));
        assert_eq!(segments[1], "MSA|AA|MSG-1|published");
    }

    #[test]
    fn an_error_locates_the_problem_in_err() {
        let problem = Problem {
            refusal: Refusal::Error,
            code: 102,
            segment: "OBX".to_owned(),
            sequence: 2,
            field: 5,
            reason: "\"x\" is not a number".to_owned(),
        };
        let ack = ack(
            &header(),
            problem.refusal.into(),
            Some(&problem),
            "refused",
            now(),
        );
        assert!(ack.contains("MSA|AE|MSG-1|refused\r"));
        assert!(
            ack.contains("ERR||OBX^2^5|102^Data type error^HL70357|E||||\"x\" is not a number\r")
        );
    }

    #[test]
    fn an_ack_to_an_iso_2022_jp_sender_is_iso_2022_jp() {
        let ack = ack(&header(), AckCode::Error, None, "検査値が不正", now());
        let bytes = encode(&ack, Charset::Iso2022Jp);
        assert!(bytes.windows(3).any(|w| w == b"\x1B$B"));
        let (back, _) = crate::charset::decode(&bytes).unwrap();
        assert_eq!(back, ack);
    }
}
