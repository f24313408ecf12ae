//! The HL7 v2 reader under generated input: every sample message, broken at random (bytes
//! flipped, cut short, delimiters swapped, segments repeated or dropped, fields replaced with
//! hostile text, character sets changed), must be read into a report or refused with a reason
//! and an ACK in the sender's character set — never a panic, never a report that breaks the
//! event's rules. Pure (no broker): `HIXBUS_ADVERSARIAL_CASES` cases (default 10,000).
//! (The malformed corpus in labs.rs sends such messages through the gateway on a broker.)
//! A failure prints proptest's minimal failing case.

use hixbus_lab_gateway::ack::{self, AckCode};
use hixbus_lab_gateway::hl7::{self, MAX_DELIMITERS, MAX_RESULTS};
use hixbus_lab_gateway::routes::MAX_MESSAGE_BYTES;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const SAMPLES: [&[u8]; 6] = [
    include_bytes!("../fixtures/hl7v2/SSMIX2-OUL-R22-iso2022jp.hl7"),
    include_bytes!("../fixtures/hl7v2/SSMIX2-OUL-R22-utf8.hl7"),
    include_bytes!("../fixtures/hl7v2/LAB-ORU-1.hl7"),
    include_bytes!("../fixtures/hl7v2/LRI_2.0-NG_CBC_Typ_Message.hl7"),
    include_bytes!("../fixtures/hl7v2/ORU-R01-01.hl7"),
    include_bytes!("../fixtures/hl7v2/OUL-R22-01.hl7"),
];

/// One way to break a message.
#[derive(Debug, Clone)]
enum Break {
    FlipByte(usize, u8),
    CutAt(usize),
    Insert(usize, Vec<u8>),
    /// Replace every `from` with `to` (a delimiter swapped, CR turned into LF…).
    Swap(u8, u8),
    RepeatSegment(usize, usize),
    DropSegment(usize),
    /// Field `field` of segment `segment` becomes `text`.
    Field(usize, usize, String),
    Charset(String),
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[|^~\\\\&]{0,20}",
        "\\PC{0,40}",
        Just("\u{1B}$B".to_owned()),
        Just("\\X0D\\\\E\\\\F\\\\S\\\\T\\\\R\\".to_owned()),
        Just("9".repeat(400)),
        Just("-1e309".to_owned()),
        Just("NaN".to_owned()),
        Just("99999999999999.9999+9999".to_owned()),
        Just("\u{202E}\u{0000}\u{0007}".to_owned()),
    ]
}

fn breaks() -> impl Strategy<Value = Break> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Break::FlipByte(p, b)),
        any::<usize>().prop_map(Break::CutAt),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(p, b)| Break::Insert(p, b)),
        (
            prop::sample::select(b"|^~\\&\r\n\x1B".to_vec()),
            prop::sample::select(b"|^~\\&\r\n#\x1B\x0B\x1C".to_vec())
        )
            .prop_map(|(f, t)| Break::Swap(f, t)),
        (any::<usize>(), 1..600usize).prop_map(|(s, n)| Break::RepeatSegment(s, n)),
        any::<usize>().prop_map(Break::DropSegment),
        (any::<usize>(), 0..30usize, hostile_text()).prop_map(|(s, f, t)| Break::Field(s, f, t)),
        prop_oneof![
            Just("UNICODE UTF-8".to_owned()),
            Just("~ISO IR87".to_owned()),
            Just("8859/1".to_owned()),
            Just("ISO IR192".to_owned()),
            Just("KOI8-R".to_owned()),
            "\\PC{0,12}",
        ]
        .prop_map(Break::Charset),
    ]
}

/// Splits at segment ends (CR, or LF for files that use it), keeping the terminators.
fn segments(message: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for &b in message {
        current.push(b);
        if b == b'\r' || b == b'\n' {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn apply(message: &[u8], b: &Break) -> Vec<u8> {
    let mut m = message.to_vec();
    match b {
        Break::FlipByte(p, byte) if !m.is_empty() => {
            let at = p % m.len();
            m[at] = *byte;
        }
        Break::CutAt(p) => m.truncate(p % (m.len() + 1)),
        Break::Insert(p, bytes) => {
            let at = p % (m.len() + 1);
            m.splice(at..at, bytes.iter().copied());
        }
        Break::Swap(from, to) => m.iter_mut().filter(|x| **x == *from).for_each(|x| *x = *to),
        Break::RepeatSegment(s, n) => {
            let mut segs = segments(&m);
            if !segs.is_empty() {
                let seg = segs[s % segs.len()].clone();
                let at = s % segs.len();
                for _ in 0..*n {
                    segs.insert(at, seg.clone());
                }
            }
            m = segs.concat();
        }
        Break::DropSegment(s) => {
            let mut segs = segments(&m);
            if !segs.is_empty() {
                let at = s % segs.len();
                segs.remove(at);
            }
            m = segs.concat();
        }
        Break::Field(s, f, text) => {
            let mut segs = segments(&m);
            if !segs.is_empty() {
                let at = s % segs.len();
                let seg = String::from_utf8_lossy(&segs[at]).into_owned();
                let end = seg.trim_end_matches(['\r', '\n']).len();
                let (body, tail) = seg.split_at(end);
                let mut fields: Vec<&str> = body.split('|').collect();
                while fields.len() <= *f {
                    fields.push("");
                }
                fields[*f] = text;
                segs[at] = format!("{}{tail}", fields.join("|")).into_bytes();
            }
            m = segs.concat();
        }
        Break::Charset(name) => {
            let text = String::from_utf8_lossy(&m).into_owned();
            let mut segs: Vec<String> = text.split('\r').map(str::to_owned).collect();
            if let Some(msh) = segs.first_mut() {
                let mut fields: Vec<&str> = msh.split('|').collect();
                while fields.len() < 18 {
                    fields.push("");
                }
                fields[17] = name;
                *msh = fields.join("|");
            }
            m = segs.join("\r").into_bytes();
        }
        Break::FlipByte(..) => {}
    }
    m
}

#[test]
fn broken_messages_are_read_or_refused_with_a_reason_never_a_panic() {
    let cases = hixbus_tests::cases(10_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcomes: [std::cell::Cell<usize>; 3] = Default::default();
    let strategy = (0..SAMPLES.len(), proptest::collection::vec(breaks(), 1..4));
    let result = runner.run(&strategy, |(sample, broken)| {
        let mut message = SAMPLES[sample].to_vec();
        for b in &broken {
            message = apply(&message, b);
        }
        // Larger messages are refused before they are read (HTTP 413, MLLP AR).
        prop_assume!(message.len() <= MAX_MESSAGE_BYTES);
        let now = chrono::Utc::now().fixed_offset();
        match hl7::read(&message) {
            Err(problem) => {
                prop_assert!(!problem.reason.is_empty());
                let text = ack::ack(
                    &Default::default(),
                    AckCode::from(problem.refusal),
                    Some(&problem),
                    &problem.reason,
                    now,
                );
                prop_assert!(text.contains("\rMSA|"), "{text}");
                outcomes[0].set(outcomes[0].get() + 1);
            }
            Ok(read) => match read.report {
                Err(problem) => {
                    prop_assert!(!problem.reason.is_empty());
                    let text = ack::ack(
                        &read.header,
                        AckCode::from(problem.refusal),
                        Some(&problem),
                        &problem.reason,
                        now,
                    );
                    let encoded = ack::encode(&text, read.charset);
                    prop_assert!(!encoded.is_empty());
                    outcomes[1].set(outcomes[1].get() + 1);
                }
                Ok(report) => {
                    // What is taken keeps the event's rules.
                    prop_assert!(!report.results.is_empty() && report.results.len() <= MAX_RESULTS);
                    prop_assert!(!report.order_id.is_empty() && !report.report_id.is_empty());
                    for r in &report.results {
                        prop_assert!(r.value_numeric.is_none_or(f64::is_finite));
                        prop_assert!(
                            r.value_text
                                .as_ref()
                                .is_none_or(|t| t.chars().count() <= 4096)
                        );
                    }
                    let text = ack::ack(&read.header, AckCode::Accept, None, "ok", now);
                    let encoded = ack::encode(&text, read.charset);
                    prop_assert!(!encoded.is_empty());
                    outcomes[2].set(outcomes[2].get() + 1);
                }
            },
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    hixbus_tests::report(
        "HL7 v2 generated (lab gateway)",
        serde_json::json!({
            "cases": cases,
            "refused_unread": outcomes[0].get(),
            "refused_with_err": outcomes[1].get(),
            "read": outcomes[2].get(),
            "panics": 0,
        }),
    );
}

/// The costliest messages: 1 MiB of delimiters is refused before it is indexed (the parser
/// spends several hundred bytes on each: about 700 MB for this one), and a message just under
/// the bound is read. Bounded memory per message is what keeps 256 MLLP connections and
/// concurrent HTTP senders from exhausting the service.
#[test]
fn the_costliest_messages_are_refused_or_read_within_bounds() {
    let header = "MSH|^~\\&|S|F|R|F|20240101||OUL^R22^OUL_R22|1|P|2.5\r";
    for filler in ['|', '^', '~', '&'] {
        let mut message = header.to_owned();
        message.push_str("OBX");
        while message.len() < MAX_MESSAGE_BYTES {
            message.push(filler);
        }
        let problem = hl7::read(message.as_bytes()).unwrap_err();
        assert!(
            problem.reason.contains("at most 65536"),
            "{}",
            problem.reason
        );
        let mut just_under = header.to_owned();
        just_under.push_str("OBX");
        just_under.extend(std::iter::repeat_n(filler, MAX_DELIMITERS - 100));
        assert!(
            hl7::read(just_under.as_bytes()).is_ok(),
            "read, then refused for its content"
        );
    }
}
