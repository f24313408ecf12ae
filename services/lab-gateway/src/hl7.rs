//! HL7 v2 lab messages (OUL^R22 as SS-MIX2 / JAHIS send them, ORU^R01 2.5.1) read into one
//! `LabResultReported`, or refused with where and why (the ACK's ERR segment).
//!
//! The text is decoded first ([`crate::charset`]); `hl7-parser` splits it into segments,
//! fields, repeats and components; this module knows what the lab segments mean. Mapping
//! tables: docs/labs.md.

use hixbus_contracts::{
    CodedConcept, Interpretation, Observation, ReferenceRange, ReportStatus, Timestamp, systems,
};
use hl7_parser::Message;
use hl7_parser::message::{Field, Segment};

use crate::charset::{self, Charset};

/// The most OBX segments one message may carry (a full panel is tens).
pub const MAX_RESULTS: usize = 500;
/// The most delimiters (fields, components, repetitions, subcomponents) one message may have.
/// The parser indexes each, at several hundred bytes apiece: a 1 MiB message of nothing but
/// delimiters would take about 700 MB. 500 results of thirty-odd fields and components are
/// well under this.
pub const MAX_DELIMITERS: usize = 65_536;
/// The longest value one OBX-5 may carry (an embedded image is refused; send a reference).
pub const MAX_VALUE_CHARS: usize = 4096;

/// How the sender is told its message was refused (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `AE`: the message has an error the sender must correct.
    Error,
    /// `AR`: hixbus does not take this kind of message at all.
    Reject,
}

/// One problem, located as ERR-2 locates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub refusal: Refusal,
    /// HL7 table 0357: 100 segment sequence, 101 required field missing, 102 data type,
    /// 103 table value not found, 200 unsupported message type, 203 unsupported version.
    pub code: u16,
    pub segment: String,
    /// Which occurrence of the segment (1-based); 0 when the message as a whole is meant.
    pub sequence: usize,
    pub field: usize,
    pub reason: String,
}

impl Problem {
    fn error(code: u16, segment: &str, sequence: usize, field: usize, reason: String) -> Self {
        Self {
            refusal: Refusal::Error,
            code,
            segment: segment.to_owned(),
            sequence,
            field,
            reason,
        }
    }

    fn reject(code: u16, segment: &str, field: usize, reason: String) -> Self {
        Self {
            refusal: Refusal::Reject,
            code,
            segment: segment.to_owned(),
            sequence: 1,
            field,
            reason,
        }
    }
}

/// What the ACK needs to echo, read from MSH even when the rest is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub control_id: String,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_facility: String,
    pub trigger: String,
    pub version: String,
    pub msh18: String,
}

/// How a message names the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientId {
    /// The sender's own id (HL7 PID-3.1, a FHIR Patient's identifier or id).
    Local(String),
    /// The cross-institution reference, when the message names the patient by insurance
    /// (JP-CLINS' member id): see `hixbus_contracts::identity`.
    Insured(String),
}

/// A lab report as read from the message: everything of `LabResultReported` but who sent it
/// (the gateway knows that from the authenticated connection).
#[derive(Debug, Clone, PartialEq)]
pub struct LabReport {
    pub patient: PatientId,
    pub report_id: String,
    pub order_id: String,
    /// ORC-21 (ordering facility): its identifier (XON-10), else its name (XON-1). The gateway
    /// uses it when MSH-6 names nobody on the exchange.
    pub ordering_facility: Option<String>,
    pub status: ReportStatus,
    pub specimen_id: Option<String>,
    pub specimen_type: CodedConcept,
    pub collected_at: Timestamp,
    pub results: Vec<Observation>,
}

/// A decoded, parsed message: its header, and its report or why not.
#[derive(Debug, Clone)]
pub struct Read {
    pub charset: Charset,
    pub header: Header,
    pub report: Result<LabReport, Problem>,
}

/// Reads `bytes` (one message, without MLLP framing). `Err` when not even MSH can be read, so
/// the ACK can only say so.
pub fn read(bytes: &[u8]) -> Result<Read, Problem> {
    let (text, charset) = charset::decode(bytes).map_err(|e| match e {
        charset::CharsetProblem::NoMsh => Problem::reject(100, "MSH", 0, e.to_string()),
        _ => Problem::reject(103, "MSH", 18, e.to_string()),
    })?;
    // MSH-1 and MSH-2 name the delimiters (usually `|^~\&`); counted before anything is built.
    let delimiters: Vec<char> = text.chars().skip(3).take(5).collect();
    let count = text.chars().filter(|c| delimiters.contains(c)).count();
    if count > MAX_DELIMITERS {
        return Err(Problem::reject(
            100,
            "MSH",
            0,
            format!(
                "the message has {count} fields, components and repetitions; at most {MAX_DELIMITERS} are taken"
            ),
        ));
    }
    // Segments end with CR; files and some senders use LF or CRLF.
    let message = hl7_parser::parse_message_with_lenient_newlines(text.trim_end())
        .map_err(|e| Problem::reject(100, "MSH", 0, format!("not an HL7 v2 message: {e}")))?;
    let header = header(&message);
    let report = report(&message, &header);
    Ok(Read {
        charset,
        header,
        report,
    })
}

fn value<'m>(segment: &'m Segment, field: usize) -> &'m str {
    segment.field(field).map_or("", Field::raw_value)
}

fn component<'m>(segment: &'m Segment, field: usize, component: usize) -> &'m str {
    segment
        .field(field)
        .and_then(|f| f.component(component))
        .map_or("", |c| c.raw_value())
}

fn header(message: &Message) -> Header {
    let Some(msh) = message.segment("MSH") else {
        return Header::default();
    };
    Header {
        control_id: value(msh, 10).to_owned(),
        sending_application: value(msh, 3).to_owned(),
        sending_facility: value(msh, 4).to_owned(),
        receiving_facility: value(msh, 6).to_owned(),
        trigger: component(msh, 9, 2).to_owned(),
        version: component(msh, 12, 1).to_owned(),
        msh18: value(msh, 18).to_owned(),
    }
}

/// The text of a field with HL7 escapes (`\F\`, `\T\`…) resolved.
fn text(message: &Message, segment: &Segment, field: usize, comp: usize) -> String {
    let Some(c) = segment.field(field).and_then(|f| f.component(comp)) else {
        return String::new();
    };
    unescape(&message.separators, c.raw_value())
}

/// `value` with its HL7 escape sequences resolved (`\F\` `\S\` `\T\` `\R\` `\E\`, `\X0D\`,
/// `\X0A\`, `\.br\`; any other is kept as its text). hl7-parser's own decoder slices the
/// text at character counts rather than byte offsets, so it panics on an escape after
/// Japanese text (found by the generated suite, tests/it/hl7_generated.rs).
pub fn unescape(separators: &hl7_parser::message::Separators, value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(separators.escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + separators.escape.len_utf8()..];
        let Some(end) = after.find(separators.escape) else {
            // An escape never closed: what follows it is dropped, as the standard reads it.
            return out;
        };
        match &after[..end] {
            "F" => out.push(separators.field),
            "R" => out.push(separators.repetition),
            "S" => out.push(separators.component),
            "T" => out.push(separators.subcomponent),
            "E" => out.push(separators.escape),
            "X0A" => out.push('\n'),
            "X0D" | ".br" => out.push('\r'),
            other => out.push_str(other),
        }
        rest = &after[end + separators.escape.len_utf8()..];
    }
    out.push_str(rest);
    out
}

fn report(message: &Message, header: &Header) -> Result<LabReport, Problem> {
    let msh = message.segment("MSH").ok_or_else(|| {
        Problem::reject(100, "MSH", 0, "the message has no MSH segment".to_owned())
    })?;
    let kind = (component(msh, 9, 1), component(msh, 9, 2));
    if !matches!(kind, ("OUL", "R22") | ("ORU", "R01")) {
        return Err(Problem::reject(
            200,
            "MSH",
            9,
            format!(
                "message type {}^{} is not taken here: send OUL^R22 or ORU^R01",
                kind.0, kind.1
            ),
        ));
    }
    if header.control_id.is_empty() {
        return Err(Problem::error(
            101,
            "MSH",
            1,
            10,
            "MSH-10 (message control id) is required".to_owned(),
        ));
    }
    if !header.version.starts_with("2.") {
        return Err(Problem::reject(
            203,
            "MSH",
            12,
            format!("version {:?} is not HL7 v2.x", header.version),
        ));
    }
    let pid = message.segment("PID").ok_or_else(|| {
        Problem::error(
            100,
            "PID",
            1,
            0,
            "the message has no PID segment".to_owned(),
        )
    })?;
    let patient_local_id = component(pid, 3, 1).to_owned();
    if patient_local_id.is_empty() {
        return Err(Problem::error(
            101,
            "PID",
            1,
            3,
            "PID-3 (the patient's id) is required".to_owned(),
        ));
    }
    let obr = message.segment("OBR").ok_or_else(|| {
        Problem::error(
            100,
            "OBR",
            1,
            0,
            "the message has no OBR segment".to_owned(),
        )
    })?;
    let orc = message.segment("ORC");
    let order_id = [component(obr, 2, 1), orc.map_or("", |o| component(o, 2, 1))]
        .into_iter()
        .find(|s| !s.is_empty())
        .ok_or_else(|| {
            Problem::error(
                101,
                "OBR",
                1,
                2,
                "OBR-2 or ORC-2 (placer order number) is required".to_owned(),
            )
        })?
        .to_owned();
    let report_id = [component(obr, 3, 1), orc.map_or("", |o| component(o, 3, 1))]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(&order_id)
        .to_owned();

    let spm = message.segment("SPM");
    let specimen_type = match spm {
        Some(spm) if !component(spm, 4, 1).is_empty() => coded(message, spm, 4, 1),
        _ if !component(obr, 15, 1).is_empty() => coded(message, obr, 15, 1),
        _ => CodedConcept::new(V2_0487, "UNK", Some("unknown")),
    };
    let specimen_id = spm
        .map(|s| component(s, 2, 1))
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    // When the specimen was collected; without SPM-17 or OBR-7, the first result's observation
    // time (OBX-14), else the message's time (MSH-7): the latest it can have been.
    let first_obx = message.segment("OBX");
    let collected = [
        spm.map_or("", |s| component(s, 17, 1)),
        component(obr, 7, 1),
        first_obx.map_or("", |o| component(o, 14, 1)),
        component(msh, 7, 1),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .ok_or_else(|| {
        Problem::error(
            101,
            "OBR",
            1,
            7,
            "SPM-17 or OBR-7 (when the specimen was collected) is required".to_owned(),
        )
    })?;
    let collected_at = timestamp(collected).ok_or_else(|| {
        Problem::error(
            102,
            "OBR",
            1,
            7,
            format!("{collected:?} is not an HL7 date/time"),
        )
    })?;

    let mut results = Vec::new();
    let mut statuses = Vec::new();
    for (n, obx) in message.segments().filter(|s| s.name == "OBX").enumerate() {
        let sequence = n + 1;
        if sequence > MAX_RESULTS {
            return Err(Problem::error(
                100,
                "OBX",
                sequence,
                0,
                format!("at most {MAX_RESULTS} results per message"),
            ));
        }
        results.push(observation(message, obx, sequence)?);
        statuses.push(value(obx, 11).to_owned());
    }
    if results.is_empty() {
        return Err(Problem::error(
            100,
            "OBX",
            1,
            0,
            "the message carries no OBX result".to_owned(),
        ));
    }
    let status = report_status(value(obr, 25), &statuses);
    let ordering_facility = orc.and_then(|o| {
        [component(o, 21, 10), component(o, 21, 1)]
            .into_iter()
            .find(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_owned())
    });
    Ok(LabReport {
        patient: PatientId::Local(patient_local_id),
        report_id,
        order_id,
        ordering_facility,
        status,
        specimen_id,
        specimen_type,
        collected_at,
        results,
    })
}

/// HL7 table 0487 (specimen type), the fallback code system for a specimen.
const V2_0487: &str = "http://terminology.hl7.org/CodeSystem/v2-0487";

/// The code system URI for an HL7 v2 coding-system name (CWE.3).
pub fn system_uri(name: &str) -> String {
    match name {
        "LN" => systems::LOINC.to_owned(),
        "JC10" => systems::JLAC10.to_owned(),
        "SCT" => systems::SNOMED_CT.to_owned(),
        "UCUM" => systems::UCUM.to_owned(),
        "HL70078" => "http://terminology.hl7.org/CodeSystem/v2-0078".to_owned(),
        "HL70487" => V2_0487.to_owned(),
        "" => "urn:hixbus:hl7v2:unnamed".to_owned(),
        // Local tables (SS-MIX2's `99…`, a lab's `L`): named as the sender names them.
        other => format!("urn:hixbus:hl7v2:{other}"),
    }
}

/// A CWE/CE at `field` (components from `first`: id, text, system).
fn coded(message: &Message, segment: &Segment, field: usize, first: usize) -> CodedConcept {
    let display = text(message, segment, field, first + 1);
    CodedConcept {
        system: system_uri(component(segment, field, first + 2)),
        code: text(message, segment, field, first),
        display: (!display.is_empty()).then_some(display),
    }
}

fn observation(message: &Message, obx: &Segment, n: usize) -> Result<Observation, Problem> {
    // A result the sender did not name (an attachment, some international samples) is kept
    // as sent, under a system that says so.
    let code = coded(message, obx, 3, 1);
    let kind = value(obx, 2);
    let raw = value(obx, 5);
    if raw.chars().count() > MAX_VALUE_CHARS {
        return Err(Problem::error(
            102,
            "OBX",
            n,
            5,
            format!("a value may have at most {MAX_VALUE_CHARS} characters"),
        ));
    }
    let mut observation = Observation {
        code,
        value_numeric: None,
        value_coded: None,
        value_text: None,
        unit: None,
        reference_range: None,
        interpretation: interpretation(value(obx, 8)),
        // OBX-3's alternate identifier (components 4–6): a local code beside JLAC10 or LOINC.
        other_codes: Some(coded(message, obx, 3, 4))
            .filter(|c| !c.code.is_empty())
            .into_iter()
            .collect(),
    };
    let status = value(obx, 11);
    match kind {
        _ if raw.is_empty() || status == "X" => {}
        // Repeated numbers (`60~120`) are kept as sent.
        "NM" if raw.contains(message.separators.repetition) => {
            observation.value_text = Some(unescape(&message.separators, raw));
        }
        "NM" => {
            let number: f64 = raw
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    Problem::error(
                        102,
                        "OBX",
                        n,
                        5,
                        format!("{raw:?} is not a number (OBX-2 is NM)"),
                    )
                })?;
            observation.value_numeric = Some(number);
        }
        "CWE" | "CE" | "CNE" => {
            observation.value_coded = Some(coded(message, obx, 5, 1));
            // A repeated coded value keeps every repetition, as sent, beside the first.
            if raw.contains(message.separators.repetition) {
                observation.value_text = Some(unescape(&message.separators, raw));
            }
        }
        // References (RP) and encapsulated data (ED) are kept as sent, bounded above.
        "ST" | "TX" | "FT" | "SN" | "TS" | "DT" | "TM" | "NA" | "RP" | "ED" => {
            observation.value_text = Some(unescape(&message.separators, raw));
        }
        other => {
            return Err(Problem::error(
                102,
                "OBX",
                n,
                2,
                format!(
                    "value type {other:?} is not taken for lab results (NM, ST, TX, FT, SN, CWE, CE, CNE, TS, DT, TM, RP, ED)"
                ),
            ));
        }
    }
    let unit = text(message, obx, 6, 1);
    observation.unit = (!unit.is_empty()).then_some(unit);
    observation.reference_range = reference_range(&unescape(&message.separators, value(obx, 7)));
    Ok(observation)
}

/// OBX-7: `low-high`, `>low`, `<high`, or text.
fn reference_range(text: &str) -> Option<ReferenceRange> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let (low, high) = if let Some(rest) = text
        .strip_prefix(['<', '≦'])
        .map(|r| r.trim_start_matches('='))
    {
        (None, number(rest))
    } else if let Some(rest) = text
        .strip_prefix(['>', '≧'])
        .map(|r| r.trim_start_matches('='))
    {
        (number(rest), None)
    } else if let Some((l, h)) = text.split_once('-').filter(|(l, _)| !l.is_empty()) {
        (number(l), number(h))
    } else {
        (None, None)
    };
    Some(ReferenceRange {
        low,
        high,
        text: Some(text.to_owned()),
    })
}

/// OBX-8 (HL7 table 0078).
fn interpretation(flag: &str) -> Interpretation {
    match flag.split('^').next().unwrap_or("").trim() {
        "N" => Interpretation::Normal,
        "L" => Interpretation::Low,
        "H" => Interpretation::High,
        "LL" => Interpretation::CriticallyLow,
        "HH" => Interpretation::CriticallyHigh,
        "A" | "AA" => Interpretation::Abnormal,
        "POS" => Interpretation::Positive,
        "NEG" => Interpretation::Negative,
        _ => Interpretation::Unknown,
    }
}

/// OBR-25 if given, else from the results' OBX-11 (HL7 tables 0123 and 0085).
fn report_status(obr25: &str, obx11: &[String]) -> ReportStatus {
    match obr25 {
        "C" => return ReportStatus::Corrected,
        "X" => return ReportStatus::Cancelled,
        "P" | "I" | "R" | "S" => return ReportStatus::Preliminary,
        "F" => return ReportStatus::Final,
        _ => {}
    }
    if obx11.iter().any(|s| s == "C") {
        ReportStatus::Corrected
    } else if !obx11.is_empty() && obx11.iter().all(|s| s == "X" || s == "D") {
        ReportStatus::Cancelled
    } else if obx11.iter().any(|s| s == "P" || s == "R" || s == "I") {
        ReportStatus::Preliminary
    } else {
        ReportStatus::Final
    }
}

/// An HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) as a timestamp; without a zone it is
/// Japan time (the senders hixbus serves).
pub fn timestamp(value: &str) -> Option<Timestamp> {
    let (body, zone) = match value.find(['+', '-']) {
        Some(at) => (&value[..at], Some(&value[at..])),
        None => (value, None),
    };
    let (digits, fraction) = body.split_once('.').unwrap_or((body, ""));
    if digits.len() < 8
        || digits.len() > 14
        || digits.len() % 2 != 0
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{digits:0<14}");
    let naive = chrono::NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S").ok()?;
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    let offset_minutes = match zone {
        None => 9 * 60,
        Some(z) if z.len() == 5 && z[1..].bytes().all(|b| b.is_ascii_digit()) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let hours: i32 = z[1..3].parse().ok()?;
            let minutes: i32 = z[3..5].parse().ok()?;
            sign * (hours * 60 + minutes)
        }
        Some(_) => return None,
    };
    let offset = chrono::FixedOffset::east_opt(offset_minutes * 60)?;
    let at = naive.and_local_timezone(offset).single()?;
    Some(Timestamp::from_unix_millis(at.timestamp_millis() + millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_after_japanese_text_are_resolved_not_a_panic() {
        let separators = hl7_parser::message::Separators::default();
        assert_eq!(
            unescape(&separators, "総蛋白\\T\\高値\\X0D\\"),
            "総蛋白&高値\r"
        );
        assert_eq!(unescape(&separators, "a\\F\\b\\S\\c\\E\\"), "a|b^c\\");
        assert_eq!(unescape(&separators, "値\\ZZ\\"), "値ZZ");
        assert_eq!(unescape(&separators, "開いたまま\\H"), "開いたまま");
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/hl7v2/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn report(name: &str) -> LabReport {
        let read = read(&fixture(name)).unwrap();
        read.report.unwrap_or_else(|p| panic!("{name}: {p:?}"))
    }

    /// The OBX segments of a UTF-8 message, split by hand: what the mapping must reproduce.
    fn obx_fields(name: &str) -> Vec<Vec<String>> {
        let text = String::from_utf8(fixture(name)).unwrap();
        text.trim_start_matches('\u{feff}')
            .split(['\r', '\n'])
            .filter(|s| s.starts_with("OBX|"))
            .map(|s| s.split('|').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn the_ss_mix2_message_reads_the_same_in_iso_2022_jp_and_in_utf_8() {
        let jis = read(&fixture("SSMIX2-OUL-R22-iso2022jp.hl7")).unwrap();
        let utf8 = read(&fixture("SSMIX2-OUL-R22-utf8.hl7")).unwrap();
        assert_eq!(jis.charset, Charset::Iso2022Jp);
        assert_eq!(jis.report.clone().unwrap(), utf8.report.clone().unwrap());
        assert_eq!(jis.header, utf8.header);
    }

    #[test]
    fn every_ss_mix2_result_keeps_its_code_value_unit_and_range_field_by_field() {
        let report = report("SSMIX2-OUL-R22-utf8.hl7");
        assert_eq!(report.patient, PatientId::Local("0001000052".to_owned()));
        assert_eq!(report.order_id, "000000011000354");
        assert_eq!(report.report_id, "000000001219001");
        assert_eq!(report.status, ReportStatus::Final);
        assert_eq!(report.specimen_type.code, "023");
        assert_eq!(report.specimen_type.display.as_deref(), Some("血清"));
        // 2011-12-19 15:00 in Japan.
        assert_eq!(
            report.collected_at.to_datetime().unwrap().to_rfc3339(),
            "2011-12-19T06:00:00+00:00"
        );
        let source = obx_fields("SSMIX2-OUL-R22-utf8.hl7");
        assert_eq!(report.results.len(), source.len());
        for (result, obx) in report.results.iter().zip(&source) {
            let code: Vec<&str> = obx[3].split('^').collect();
            assert_eq!(result.code.code, code[0]);
            assert_eq!(result.code.display.as_deref(), Some(code[1]));
            assert_eq!(
                result.code.system, "urn:oid:1.2.392.200119.4.504",
                "JC10 is JLAC10"
            );
            assert_eq!(result.value_numeric, Some(obx[5].parse::<f64>().unwrap()));
            let unit = obx[6].split('^').next().unwrap();
            assert_eq!(result.unit.as_deref(), (!unit.is_empty()).then_some(unit));
            let range = result.reference_range.as_ref().unwrap();
            assert_eq!(range.text.as_deref(), Some(obx[7].as_str()));
            let (low, high) = obx[7].split_once('-').unwrap();
            assert_eq!(range.low, Some(low.parse().unwrap()));
            assert_eq!(range.high, Some(high.parse().unwrap()));
        }
        assert_eq!(
            report.results[2].code.display.as_deref(),
            Some("アルブミン")
        );
    }

    #[test]
    fn a_local_code_beside_jlac10_is_kept_as_another_code() {
        let with_local = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7"))
            .unwrap()
            .replacen("^総蛋白^JC10|", "^総蛋白^JC10^L0001^総蛋白^99LAB|", 1);
        let report = read(with_local.as_bytes()).unwrap().report.unwrap();
        let protein = &report.results[1];
        assert_eq!(protein.code.code, "3A010000002327101");
        assert_eq!(protein.other_codes.len(), 1);
        assert_eq!(protein.other_codes[0].code, "L0001");
        assert_eq!(protein.other_codes[0].system, "urn:hixbus:hl7v2:99LAB");
        assert!(report.results[0].other_codes.is_empty());
    }

    #[test]
    fn the_international_samples_are_read_with_every_result() {
        for name in [
            "LAB-ORU-1.hl7",
            "LRI_2.0-NG_CBC_Typ_Message.hl7",
            "ORU-R01-01.hl7",
            "OUL-R22-01.hl7",
        ] {
            let read = read(&fixture(name)).unwrap();
            let report = read
                .report
                .unwrap_or_else(|p| panic!("{name} refused: {p:?}"));
            assert_eq!(report.results.len(), obx_fields(name).len(), "{name}");
        }
        let cbc = report("LRI_2.0-NG_CBC_Typ_Message.hl7");
        let hemoglobin = cbc.results.iter().find(|r| r.code.code == "718-7").unwrap();
        assert_eq!(hemoglobin.code.system, "http://loinc.org");
        assert_eq!(hemoglobin.value_numeric, Some(12.5));
        assert_eq!(hemoglobin.unit.as_deref(), Some("g/mL"));
        let coded = cbc
            .results
            .iter()
            .find(|r| r.code.code == "38892-6")
            .unwrap();
        let value = coded.value_coded.as_ref().unwrap();
        assert_eq!(
            (value.system.as_str(), value.code.as_str()),
            ("http://snomed.info/sct", "260348001")
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_where_and_why() {
        let ok = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7")).unwrap();
        let cases: Vec<(&str, String, Refusal, &str, usize)> = vec![
            (
                "no MSH",
                "PID|1||42\r".to_owned(),
                Refusal::Reject,
                "MSH",
                0,
            ),
            (
                "an ADT",
                ok.replacen("OUL^R22^OUL_R22", "ADT^A01^ADT_A01", 1),
                Refusal::Reject,
                "MSH",
                9,
            ),
            (
                "no control id",
                ok.replacen("|20111220131032|", "||", 1),
                Refusal::Error,
                "MSH",
                10,
            ),
            (
                "no patient id",
                ok.replacen("0001000052^^^^PI", "", 1),
                Refusal::Error,
                "PID",
                3,
            ),
            (
                "a word for a number",
                ok.replacen("||1.7||", "||about two||", 1),
                Refusal::Error,
                "OBX",
                5,
            ),
            (
                "no results",
                ok.split('\r')
                    .filter(|s| !s.starts_with("OBX"))
                    .collect::<Vec<_>>()
                    .join("\r"),
                Refusal::Error,
                "OBX",
                0,
            ),
            (
                "an unknown character set",
                ok.replacen("~ISO IR87", "KOI8-R", 1),
                Refusal::Reject,
                "MSH",
                18,
            ),
        ];
        for (what, message, refusal, segment, field) in cases {
            let problem = match read(message.as_bytes()) {
                Err(p) => p,
                Ok(r) => r.report.expect_err(what),
            };
            assert_eq!(
                (problem.refusal, problem.segment.as_str(), problem.field),
                (refusal, segment, field),
                "{what}: {problem:?}"
            );
            assert!(!problem.reason.is_empty());
        }
    }

    #[test]
    fn hl7_times_are_read_in_japan_time_unless_they_say_otherwise() {
        let at = |v: &str| timestamp(v).map(|t| t.to_datetime().unwrap().to_rfc3339());
        assert_eq!(at("20111219").as_deref(), Some("2011-12-18T15:00:00+00:00"));
        assert_eq!(
            at("201112191500").as_deref(),
            Some("2011-12-19T06:00:00+00:00")
        );
        assert_eq!(
            at("20111220103059.0000").as_deref(),
            Some("2011-12-20T01:30:59+00:00")
        );
        assert_eq!(
            at("202010101700+0215").as_deref(),
            Some("2020-10-10T14:45:00+00:00")
        );
        for bad in [
            "",
            "2011",
            "20111340",
            "2011121a",
            "20111219+9",
            "201112191500.x",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }
}
