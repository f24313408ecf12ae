//! Lab results end to end on a real broker: HL7 v2 messages POSTed to the lab gateway become
//! `LabResultReported` on `lab-results`, each answered with its ACK only after it was published;
//! refused messages are answered AE/AR with the reason and publish nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_access::Directory;
use hixbus_bus::reader::{Start, TopicReader};
use hixbus_contracts::{Event, LabResultReported, ReportStatus};
use hixbus_tests::{
    Backend, BusStack, Service, directory_with_keys, free_port, fresh_database, start_service,
    start_service_with,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORGANIZATIONS: &str = r#"
[[organization]]
id = "lab-kensa"
role = "lab"
name = "検査センター"
institution_code = "1319999999"

[[organization]]
id = "hospital-daiichi"
role = "hospital"
name = "第一病院"
institution_code = "1311234567"

[[organization]]
id = "pharmacy-aozora"
role = "pharmacy"
name = "あおぞら薬局"
"#;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/fixtures/hl7v2/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Every event of type `E` on `topic`, from the beginning.
pub(crate) async fn on_topic<E: TryFrom<Event>>(stack: &BusStack, topic: &str) -> Vec<E> {
    let records = TopicReader::open(&stack.kafka, topic, Start::Beginning)
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    let codec = stack.codec();
    let mut events = Vec::new();
    for record in records {
        let decoded = codec
            .decode(record.payload.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        events.extend(E::try_from(decoded.event).ok());
    }
    events
}

async fn reports(stack: &BusStack) -> Vec<LabResultReported> {
    on_topic(stack, "lab-results").await
}

#[tokio::test]
async fn hl7_lab_messages_are_acked_after_publishing_and_bad_ones_publish_nothing() {
    let stack = BusStack::start().await;
    let mut directory = Directory::from_toml(ORGANIZATIONS).unwrap();
    let lab = directory.issue_key("lab-kensa").unwrap();
    let pharmacy = directory.issue_key("pharmacy-aozora").unwrap();
    let directory = Arc::new(directory);
    let db = fresh_database(Backend::Sqlite).await;
    let (url, service) = start_service(Kind::LabGateway, &stack, &directory, Some(&db)).await;
    let http = reqwest::Client::new();
    let post = |key: &str, body: Vec<u8>| {
        http.post(format!("{url}/hl7v2"))
            .bearer_auth(key)
            .header("content-type", "application/hl7-v2")
            .body(body)
            .send()
    };

    // The SS-MIX2 message as hospitals send it, in ISO-2022-JP: AA, in ISO-2022-JP.
    let answer = post(lab.expose(), fixture("SSMIX2-OUL-R22-iso2022jp.hl7"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ack = answer.bytes().await.unwrap();
    let (ack, _) = hixbus_lab_gateway::charset::decode(&ack).unwrap();
    assert!(ack.contains("\rMSA|AA|20111220131032|"), "{ack}");
    let published = reports(&stack).await;
    assert_eq!(published.len(), 1, "published before the ACK");
    let report = &published[0];
    assert_eq!(report.envelope.producer_org, "lab-kensa");
    assert_eq!(report.envelope.patient_ref, "local:lab-kensa:0001000052");
    assert_eq!(report.performing_lab.org_id, "lab-kensa");
    assert_eq!(report.order_id, "000000011000354");
    assert_eq!(report.status, ReportStatus::Final);
    assert_eq!(report.results.len(), 3);
    assert_eq!(report.results[1].code.code, "3A010000002327101");
    assert_eq!(report.results[1].code.display.as_deref(), Some("総蛋白"));
    assert_eq!(report.results[1].value_numeric, Some(7.2));
    assert_eq!(report.results[1].unit.as_deref(), Some("g/dl"));

    // The same message in UTF-8 is the same report (and, being the same message id, the same
    // event: a resend after a lost ACK is recognized downstream).
    let answer = post(lab.expose(), fixture("SSMIX2-OUL-R22-utf8.hl7"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let published = reports(&stack).await;
    assert_eq!(published.len(), 2);
    assert_eq!(published[1].results, published[0].results);
    assert_eq!(
        published[1].envelope.event_id,
        published[0].envelope.event_id
    );

    // Every international sample is taken.
    for name in [
        "LAB-ORU-1.hl7",
        "LRI_2.0-NG_CBC_Typ_Message.hl7",
        "ORU-R01-01.hl7",
        "OUL-R22-01.hl7",
    ] {
        let answer = post(lab.expose(), fixture(name)).await.unwrap();
        let status = answer.status();
        let ack = String::from_utf8_lossy(&answer.bytes().await.unwrap()).into_owned();
        assert_eq!(status, 200, "{name}: {ack}");
        assert!(ack.contains("MSA|AA|"), "{name}: {ack}");
    }
    assert_eq!(reports(&stack).await.len(), 6);

    // Refused: AE/AR with ERR, nothing published.
    let good = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7")).unwrap();
    for (what, body, status, msa) in [
        (
            "a word for a number",
            good.replacen("||1.7||", "||about two||", 1).into_bytes(),
            422,
            "MSA|AE|",
        ),
        (
            "an ADT",
            good.replacen("OUL^R22^OUL_R22", "ADT^A01^ADT_A01", 1)
                .into_bytes(),
            400,
            "MSA|AR|",
        ),
        ("not HL7", b"hello".to_vec(), 400, "MSA|AR|"),
        (
            "bytes not in ISO-2022-JP",
            {
                let mut b = fixture("SSMIX2-OUL-R22-iso2022jp.hl7");
                b.extend_from_slice(b"\xFF\xFE");
                b
            },
            400,
            "MSA|AR|",
        ),
    ] {
        let answer = post(lab.expose(), body).await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{what}");
        let ack = String::from_utf8_lossy(&answer.bytes().await.unwrap()).into_owned();
        assert!(ack.contains(msa), "{what}: {ack}");
        assert!(ack.contains("\rERR|"), "{what}: {ack}");
    }
    assert_eq!(
        reports(&stack).await.len(),
        6,
        "nothing refused was published"
    );

    // Only labs (and hospitals) send results, and only with a key.
    let answer = post(pharmacy.expose(), good.clone().into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let answer = post("hxb_nope", good.into_bytes()).await.unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(reports(&stack).await.len(), 6);
    service.stop().await;
}

/// Reads one MLLP frame (its body) from `stream`, or `None` if the connection closed first.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte))
            .await
            .expect("an answer within 20 s")
        {
            Ok(0) | Err(_) => return None,
            Ok(_) => buffer.push(byte[0]),
        }
        if buffer.ends_with(&[0x1C, 0x0D]) {
            let start = buffer.iter().position(|b| *b == 0x0B).unwrap();
            return Some(buffer[start + 1..buffer.len() - 2].to_vec());
        }
    }
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0x0B];
    framed.extend_from_slice(message);
    framed.extend_from_slice(&[0x1C, 0x0D]);
    framed
}

#[tokio::test]
async fn mllp_answers_each_message_on_its_connection_and_refuses_unknown_senders_and_endless_frames()
 {
    let stack = BusStack::start().await;
    let directory = Arc::new(Directory::from_toml(ORGANIZATIONS).unwrap());
    let db = fresh_database(Backend::Sqlite).await;
    let port = free_port();
    let mllp = format!("127.0.0.1:{port}");
    let (_, service) = start_service_with(
        Kind::LabGateway,
        &stack,
        &directory,
        Some(&db),
        &[
            ("mllp_listen", &mllp),
            ("mllp_senders", "lab-kensa=127.0.0.1"),
        ],
    )
    .await;

    // Two messages on one connection, in ISO-2022-JP and UTF-8: two AAs, in order, each after
    // its report was published.
    let mut stream = tokio::net::TcpStream::connect(&mllp).await.unwrap();
    let iso = fixture("SSMIX2-OUL-R22-iso2022jp.hl7");
    let lab_oru = fixture("LAB-ORU-1.hl7");
    let mut both = framed(&iso);
    both.extend(framed(&lab_oru));
    stream.write_all(&both).await.unwrap();
    let first = read_frame(&mut stream).await.unwrap();
    let (first, _) = hixbus_lab_gateway::charset::decode(&first).unwrap();
    assert!(first.contains("\rMSA|AA|20111220131032|"), "{first}");
    let second = String::from_utf8(read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(second.contains("\rMSA|AA|"), "{second}");
    assert_eq!(reports(&stack).await.len(), 2);

    // A bad message on the same connection: AE, and the connection still serves.
    let bad = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7"))
        .unwrap()
        .replacen("||1.7||", "||about two||", 1);
    stream.write_all(&framed(bad.as_bytes())).await.unwrap();
    let refused = String::from_utf8(read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(refused.contains("\rMSA|AE|"), "{refused}");
    assert!(refused.contains("\rERR||OBX^1^5|102^"), "{refused}");

    // A frame begun and abandoned (the client disconnects mid-frame) leaves nothing.
    stream.write_all(&framed(&lab_oru)[..200]).await.unwrap();
    drop(stream);

    // A frame larger than the gateway takes: AR, then the connection is closed.
    let mut big = tokio::net::TcpStream::connect(&mllp).await.unwrap();
    let mut huge = vec![0x0B];
    huge.extend(std::iter::repeat_n(b'A', 1024 * 1024 + 16));
    let _ = big.write_all(&huge).await;
    let answer = read_frame(&mut big).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("MSA|AR|"));
    assert!(
        read_frame(&mut big).await.is_none(),
        "closed after refusing"
    );
    assert_eq!(
        reports(&stack).await.len(),
        2,
        "nothing refused was published"
    );
    service.stop().await;

    // From an address no sender is configured for: closed without an answer.
    let (_, service) = start_service_with(
        Kind::LabGateway,
        &stack,
        &directory,
        Some(&db),
        &[
            ("mllp_listen", &mllp),
            ("mllp_senders", "lab-kensa=10.9.9.9"),
        ],
    )
    .await;
    let mut stranger = tokio::net::TcpStream::connect(&mllp).await.unwrap();
    let _ = stranger.write_all(&framed(&iso)).await;
    assert!(read_frame(&mut stranger).await.is_none());
    assert_eq!(reports(&stack).await.len(), 2);
    service.stop().await;
}

/// The lab gateway and the clinic gateway on one broker: a lab sends, clinics read their inbox.
struct ResultsFlow {
    stack: BusStack,
    lab: Service,
    clinic: Service,
    lab_url: String,
    clinic_url: String,
    keys: std::collections::HashMap<String, String>,
    http: reqwest::Client,
}

/// The ordering institutions of the sample messages, as the exchange knows them: MSH-6 names
/// them by the code the hospital's systems use (two samples name nobody; the test addresses
/// them to clinic-sakura).
const RESULT_ORGANIZATIONS: &str = r#"
[[organization]]
id = "lab-kensa"
role = "lab"
name = "検査センター"

[[organization]]
id = "hospital-toro"
role = "hospital"
name = "登呂病院"
institution_code = "RCV"

[[organization]]
id = "clinic-nist"
role = "clinic"
name = "NIST EHR"
institution_code = "NIST EHR Facility"

[[organization]]
id = "clinic-iowa"
role = "clinic"
name = "Iowa DOH"
institution_code = "IA DOH"

[[organization]]
id = "clinic-sakura"
role = "clinic"
name = "さくら内科クリニック"

[[organization]]
id = "hospital-clins"
role = "hospital"
name = "JP-CLINS 例示病院"
institution_code = "1318814790"

[[organization]]
id = "pharmacy-aozora"
role = "pharmacy"
name = "あおぞら薬局"
"#;

impl ResultsFlow {
    async fn start() -> Self {
        let stack = BusStack::start().await;
        let (directory, keys) = directory_with_keys(RESULT_ORGANIZATIONS);
        let lab_db = fresh_database(Backend::Sqlite).await;
        let clinic_db = fresh_database(Backend::Sqlite).await;
        let (lab_url, lab) =
            start_service(Kind::LabGateway, &stack, &directory, Some(&lab_db)).await;
        let (clinic_url, clinic) =
            start_service(Kind::ClinicGateway, &stack, &directory, Some(&clinic_db)).await;
        Self {
            stack,
            lab,
            clinic,
            lab_url,
            clinic_url,
            keys,
            http: reqwest::Client::new(),
        }
    }

    /// Sends one message as lab-kensa; its ACK.
    async fn send(&self, message: Vec<u8>) -> String {
        let answer = self
            .http
            .post(format!("{}/hl7v2", self.lab_url))
            .bearer_auth(&self.keys["lab-kensa"])
            .header("content-type", "application/hl7-v2")
            .body(message)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let (ack, _) = hixbus_lab_gateway::charset::decode(&answer.bytes().await.unwrap()).unwrap();
        assert_eq!(status, 200, "{ack}");
        assert!(ack.contains("MSA|AA|"), "{ack}");
        ack
    }

    async fn get(&self, org: &str, path: &str) -> (u16, Value) {
        let answer = self
            .http
            .get(format!("{}{path}", self.clinic_url))
            .bearer_auth(&self.keys[org])
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    /// Waits until `org`'s report `key` reads as `done` says; the report.
    async fn wait_for(&self, org: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(org, &report_path(key)).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{key} never reached {org}'s inbox as expected: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.lab.stop().await;
        self.clinic.stop().await;
        drop(self.stack);
    }
}

/// The path of report `key` (`<lab>/<report id>`), its report id percent-encoded.
fn report_path(key: &str) -> String {
    let (lab, report_id) = key.split_once('/').unwrap();
    let mut url = reqwest::Url::parse("http://x/clinic/results").unwrap();
    url.path_segments_mut().unwrap().push(lab).push(report_id);
    url.path().to_owned()
}

/// The message with MSH-`field` replaced (the sample files stay as published).
fn with_msh(message: &str, field: usize, value: &str) -> String {
    let (msh, rest) = message.split_once(['\r', '\n']).unwrap();
    let mut fields: Vec<&str> = msh.split('|').collect();
    // MSH-1 is the separator itself: MSH-n is at index n - 1.
    while fields.len() < field {
        fields.push("");
    }
    fields[field - 1] = value;
    format!("{}\r{rest}", fields.join("|"))
}

/// The OBX segments of a message, read here independently of the gateway: the test's own
/// reading of the source, to compare the inbox with field by field.
fn source_results(message: &str) -> Vec<Vec<Vec<String>>> {
    message
        .split(['\r', '\n'])
        .filter(|s| s.starts_with("OBX|"))
        .map(|s| {
            s.split('|')
                .map(|f| f.split('^').map(str::to_owned).collect())
                .collect()
        })
        .collect()
}

fn component(obx: &[Vec<String>], field: usize, component: usize) -> &str {
    obx.get(field)
        .and_then(|f| f.get(component - 1))
        .map_or("", String::as_str)
}

/// Asserts the inbox's results are the source's, field by field: code and name, other code,
/// value by type, unit, reference range, flag.
fn assert_results_as_sent(name: &str, message: &str, shown: &Value) {
    let source = source_results(message);
    let shown = shown["results"].as_array().unwrap();
    assert_eq!(shown.len(), source.len(), "{name}: one result per OBX");
    for (n, (obx, result)) in source.iter().zip(shown).enumerate() {
        let at = format!("{name} OBX {}", n + 1);
        let field = |i: usize| obx.get(i).map(|f| f.join("^")).unwrap_or_default();
        assert_eq!(result["code"]["code"], component(obx, 3, 1), "{at}: code");
        let display = component(obx, 3, 2);
        if !display.is_empty() {
            assert_eq!(result["code"]["display"], display, "{at}: name");
        }
        if !component(obx, 3, 4).is_empty() {
            assert_eq!(
                result["other_codes"][0]["code"],
                component(obx, 3, 4),
                "{at}: alternate code"
            );
        }
        let value = field(5);
        let status = component(obx, 11, 1);
        let kind = component(obx, 2, 1);
        if value.is_empty() || status == "X" {
            assert!(
                result["value_numeric"].is_null() && result["value_text"].is_null(),
                "{at}"
            );
        } else if kind == "NM" && !value.contains('~') {
            assert_eq!(
                result["value_numeric"].as_f64(),
                Some(value.parse::<f64>().unwrap()),
                "{at}: value"
            );
        } else if kind == "CWE" || kind == "CE" {
            let first = component(obx, 5, 1).split('~').next().unwrap();
            assert_eq!(result["value_coded"]["code"], first, "{at}: value");
            if value.contains('~') {
                assert_eq!(
                    result["value_text"],
                    value.as_str(),
                    "{at}: every repetition"
                );
            }
        } else if !value.contains('\\') {
            assert_eq!(result["value_text"], value.as_str(), "{at}: value");
        }
        let unit = component(obx, 6, 1);
        if unit.is_empty() {
            assert!(result["unit"].is_null(), "{at}: unit");
        } else {
            assert_eq!(result["unit"], unit, "{at}: unit");
        }
        let range = field(7);
        if range.is_empty() {
            assert!(result["reference_range"].is_null(), "{at}: range");
        } else {
            assert_eq!(
                result["reference_range"]["text"],
                range.as_str(),
                "{at}: range"
            );
        }
        let flag = match component(obx, 8, 1).split('~').next().unwrap() {
            "N" => "NORMAL",
            "L" => "LOW",
            "H" => "HIGH",
            "LL" => "CRITICALLY_LOW",
            "HH" => "CRITICALLY_HIGH",
            "A" | "AA" => "ABNORMAL",
            "POS" => "POSITIVE",
            "NEG" => "NEGATIVE",
            _ => "UNKNOWN",
        };
        assert_eq!(result["interpretation"], flag, "{at}: flag");
    }
}

#[tokio::test]
async fn every_lab_message_reaches_the_ordering_clinics_inbox_as_sent_and_no_one_elses() {
    let flow = ResultsFlow::start().await;
    let utf8 = |name: &str| String::from_utf8(fixture(name)).unwrap();
    // (file, message as sent, ordering clinic, report key)
    let messages = [
        (
            "SSMIX2-OUL-R22-iso2022jp.hl7",
            fixture("SSMIX2-OUL-R22-iso2022jp.hl7"),
            "hospital-toro",
            "lab-kensa/000000001219001",
        ),
        (
            "LRI_2.0-NG_CBC_Typ_Message.hl7",
            fixture("LRI_2.0-NG_CBC_Typ_Message.hl7"),
            "clinic-nist",
            "lab-kensa/R-991133",
        ),
        (
            "ORU-R01-01.hl7",
            fixture("ORU-R01-01.hl7"),
            "clinic-iowa",
            "lab-kensa/986",
        ),
        (
            "LAB-ORU-1.hl7",
            with_msh(&utf8("LAB-ORU-1.hl7"), 6, "clinic-sakura").into_bytes(),
            "clinic-sakura",
            "lab-kensa/82503246",
        ),
        (
            "OUL-R22-01.hl7",
            with_msh(&utf8("OUL-R22-01.hl7"), 6, "clinic-sakura").into_bytes(),
            "clinic-sakura",
            "lab-kensa/40bcbe96bcbf8cda8b07403263b92cb4",
        ),
    ];
    for (name, message, clinic, key) in &messages {
        flow.send(message.clone()).await;
        let shown = flow.wait_for(clinic, key, |_| true).await;
        let (text, _) = hixbus_lab_gateway::charset::decode(message).unwrap();
        assert_results_as_sent(name, &text, &shown);
        assert_eq!(shown["performing_lab"]["org_id"], "lab-kensa", "{name}");
        assert_eq!(shown["status"], "final", "{name}");
        // Nobody else sees it, not even by its key.
        for other in [
            "clinic-nist",
            "clinic-iowa",
            "clinic-sakura",
            "hospital-toro",
        ] {
            if other != *clinic {
                let (status, _) = flow.get(other, &report_path(key)).await;
                assert_eq!(status, 404, "{name} leaked to {other}");
            }
        }
    }
    // Japanese text intact, the specimen and the order as sent.
    let (_, toro) = flow
        .get("hospital-toro", "/clinic/results/lab-kensa/000000001219001")
        .await;
    assert_eq!(toro["results"][1]["code"]["display"], "総蛋白");
    assert_eq!(toro["specimen"]["specimen_type"]["display"], "血清");
    assert_eq!(toro["order_id"], "000000011000354");
    assert_eq!(toro["patient_ref"], "local:lab-kensa:0001000052");
    // The UTF-8 copy is the same message (same MSH-10): the same event, one version.
    flow.send(fixture("SSMIX2-OUL-R22-utf8.hl7")).await;
    let (_, again) = flow
        .get("hospital-toro", "/clinic/results/lab-kensa/000000001219001")
        .await;
    assert_eq!(again["versions"].as_array().unwrap().len(), 1);
    assert_eq!(again["results"], toro["results"]);

    // Each clinic's list holds its own reports only.
    let (status, sakura) = flow.get("clinic-sakura", "/clinic/results").await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = sakura["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"lab-kensa/82503246"));
    // A pharmacy has no results inbox; a lab reads none.
    let (status, _) = flow.get("pharmacy-aozora", "/clinic/results").await;
    assert_eq!(status, 403);
    let (status, _) = flow.get("lab-kensa", "/clinic/results").await;
    assert_eq!(status, 403);
    flow.stop().await;
}

/// Reads server-sent events from `stream` until one of kind `event` mentions `needle`; its
/// data.
async fn next_event(stream: &mut reqwest::Response, event: &str, needle: &str) -> Value {
    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for block in received.split("\n\n") {
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = Some(k.trim());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = Some(d.trim());
                }
            }
            if let (Some(k), Some(d)) = (kind, data)
                && k == event
                && d.contains(needle)
            {
                return serde_json::from_str(d).unwrap();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {event} event with {needle}: {received}"))
            .unwrap()
            .expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_critical_value_reaches_the_clinics_stream_stays_on_top_until_acknowledged_and_a_correction_supersedes()
 {
    let flow = ResultsFlow::start().await;
    let mut stream = flow
        .http
        .get(format!("{}/clinic/results/stream", flow.clinic_url))
        .bearer_auth(&flow.keys["hospital-toro"])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut other_stream = flow
        .http
        .get(format!("{}/clinic/results/stream", flow.clinic_url))
        .bearer_auth(&flow.keys["clinic-sakura"])
        .send()
        .await
        .unwrap();
    let original = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7")).unwrap();
    let key = "lab-kensa/000000001219001";

    // Total protein flagged HH by the lab: critical, pushed to the ordering hospital's screen.
    let critical =
        with_msh(&original, 10, "CRIT-1").replacen("|6.70-8.3||||F|", "|6.70-8.3|HH|||F|", 1);
    flow.send(critical.into_bytes()).await;
    let pushed = next_event(&mut stream, "critical", key).await;
    assert_eq!(pushed["awaiting_acknowledgement"], true);
    assert_eq!(pushed["critical"][0]["index"], 1);
    assert_eq!(pushed["critical"][0]["code"]["display"], "総蛋白");
    let first_version = pushed["event_id"].as_str().unwrap().to_owned();
    let (_, list) = flow.get("hospital-toro", "/clinic/results").await;
    assert_eq!(list["awaiting_acknowledgement"][0]["report"], key);

    // A correction (OBR-25 C, the value corrected) supersedes it everywhere it was shown; its
    // critical value must be acknowledged on its own.
    let corrected = with_msh(&original, 10, "CRIT-2")
        .replacen(
            "|7.2|g/dl^g/dl^99XYZ|6.70-8.3||||F|",
            "|9.9|g/dl^g/dl^99XYZ|6.70-8.3|HH|||C|",
            1,
        )
        .replacen(
            "||||||20111220103059\rORC",
            "||||||20111220103059|||C\rORC",
            1,
        );
    flow.send(corrected.into_bytes()).await;
    let pushed = next_event(&mut stream, "critical", "9.9").await;
    assert_eq!(pushed["status"], "corrected");
    assert_eq!(pushed["results"][1]["value_numeric"], 9.9);
    let shown = flow
        .wait_for("hospital-toro", key, |r| r["status"] == "corrected")
        .await;
    assert_eq!(shown["results"][1]["value_numeric"], 9.9);
    let versions = shown["versions"].as_array().unwrap();
    assert_eq!(
        versions.len(),
        2,
        "the superseded version is kept, not shown"
    );
    assert_eq!(versions[0]["event_id"], first_version.as_str());
    let current = shown["event_id"].as_str().unwrap().to_owned();

    // Acknowledging the version it no longer shows is refused; the shown one is recorded.
    let acknowledge = |event_id: String| {
        flow.http
            .post(format!(
                "{}/clinic/results/{key}/acknowledge",
                flow.clinic_url
            ))
            .bearer_auth(&flow.keys["hospital-toro"])
            .json(&serde_json::json!({
                "event_id": event_id,
                "acknowledged_by": {"id": "D001", "name": "医師一郎"}
            }))
            .send()
    };
    let stale = acknowledge(first_version.clone()).await.unwrap();
    assert_eq!(stale.status(), 409);
    let done = acknowledge(current.clone()).await.unwrap();
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["awaiting_acknowledgement"], false);
    assert_eq!(done["acknowledged"]["by"]["name"], "医師一郎");
    let (_, list) = flow.get("hospital-toro", "/clinic/results").await;
    assert_eq!(list["awaiting_acknowledgement"], serde_json::json!([]));
    // Another clinic can neither acknowledge it nor hear of it.
    let foreign = flow
        .http
        .post(format!(
            "{}/clinic/results/{key}/acknowledge",
            flow.clinic_url
        ))
        .bearer_auth(&flow.keys["clinic-sakura"])
        .json(&serde_json::json!({"event_id": current, "acknowledged_by": {"id": "X"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);

    // A cancellation (OBR-25 X) withdraws the report: still listed, marked withdrawn.
    let cancelled = with_msh(&original, 10, "CRIT-3").replacen(
        "||||||20111220103059\rORC",
        "||||||20111220103059|||X\rORC",
        1,
    );
    flow.send(cancelled.into_bytes()).await;
    let shown = flow
        .wait_for("hospital-toro", key, |r| r["withdrawn"] == true)
        .await;
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(shown["versions"].as_array().unwrap().len(), 3);

    // A potassium of 6.5 mmol/L without a flag is critical by the limits table.
    let potassium = with_msh(&original, 10, "K-1")
        .replace("000000001219001", "000000001219002")
        .replacen(
            "OBX|1|NM|3A016000002327102^A/G比^JC10||1.7||1.2-2.0||||F|",
            "OBX|1|NM|3H015000002327101^K^JC10||6.5|mmol/L|3.5-5.0||||F|",
            1,
        );
    flow.send(potassium.into_bytes()).await;
    let pushed = next_event(&mut stream, "critical", "lab-kensa/000000001219002").await;
    assert!(
        pushed["critical"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("potassium 6.5"),
        "{pushed}"
    );
    // The other clinic's screen heard nothing of all this.
    let heard = tokio::time::timeout(Duration::from_millis(500), other_stream.chunk()).await;
    if let Ok(Ok(Some(chunk))) = heard {
        assert!(
            !String::from_utf8_lossy(&chunk).contains("lab-kensa/"),
            "another clinic heard of it"
        );
    }
    flow.stop().await;
}

fn fhir_fixture(path: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(format!(
            "{}/fixtures/fhir/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap()
}

impl ResultsFlow {
    /// POSTs a FHIR resource to the lab gateway as `org`.
    async fn send_fhir(&self, org: &str, endpoint: &str, body: &Value) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}/fhir/{endpoint}", self.lab_url))
            .bearer_auth(&self.keys[org])
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }
}

const JLAC10: [&str; 3] = [
    "urn:oid:1.2.392.200119.4.504",
    "http://medis.or.jp/CodeSystem/master-JLAC10-17digits",
    "http://jpfhir.jp/fhir/clins/CodeSystem/JLAC10/JP_CLINS_ObsLabResult_CoreLabo_CS",
];

/// Asserts one shown result is the source Observation, field by field: every code it carries
/// (JLAC10 first), its value and unit, the reference range and the flag.
fn assert_observation_as_sent(at: &str, source: &Value, shown: &Value) {
    let codings = source["code"]["coding"].as_array().unwrap();
    let mut sent: Vec<(String, String)> = codings
        .iter()
        .map(|c| {
            let system = c["system"].as_str().unwrap();
            let system = if JLAC10.contains(&system) {
                JLAC10[0]
            } else {
                system
            };
            (system.to_owned(), c["code"].as_str().unwrap().to_owned())
        })
        .collect();
    sent.dedup();
    let mut kept = vec![(
        shown["code"]["system"].as_str().unwrap().to_owned(),
        shown["code"]["code"].as_str().unwrap().to_owned(),
    )];
    for other in shown["other_codes"].as_array().unwrap() {
        kept.push((
            other["system"].as_str().unwrap().to_owned(),
            other["code"].as_str().unwrap().to_owned(),
        ));
    }
    for code in &sent {
        assert!(kept.contains(code), "{at}: {code:?} kept in {kept:?}");
    }
    assert_eq!(
        kept.len(),
        {
            let mut unique = sent.clone();
            unique.sort();
            unique.dedup();
            unique.len()
        },
        "{at}: no code invented"
    );
    if sent.iter().any(|(s, _)| s == JLAC10[0]) {
        assert_eq!(shown["code"]["system"], JLAC10[0], "{at}: JLAC10 first");
    }
    if let Some(q) = source.get("valueQuantity") {
        assert_eq!(
            shown["value_numeric"].as_f64(),
            q["value"].as_f64(),
            "{at}: value"
        );
        assert_eq!(shown["unit"], q["unit"], "{at}: unit");
    }
    if let Some(c) = source.get("valueCodeableConcept") {
        assert_eq!(
            shown["value_coded"]["code"], c["coding"][0]["code"],
            "{at}: value"
        );
        assert_eq!(shown["value_text"], c["text"], "{at}: value text");
    }
    match source.pointer("/referenceRange/0") {
        Some(range) => {
            assert_eq!(
                shown["reference_range"]["low"].as_f64(),
                range.pointer("/low/value").and_then(Value::as_f64),
                "{at}: low"
            );
            assert_eq!(
                shown["reference_range"]["high"].as_f64(),
                range.pointer("/high/value").and_then(Value::as_f64),
                "{at}: high"
            );
        }
        None => assert!(shown["reference_range"].is_null(), "{at}: no range"),
    }
    let flag = match source
        .pointer("/interpretation/0/coding/0/code")
        .and_then(Value::as_str)
    {
        Some("L") => "LOW",
        Some("H") => "HIGH",
        Some("N") => "NORMAL",
        Some("HH") => "CRITICALLY_HIGH",
        Some("LL") => "CRITICALLY_LOW",
        None => "UNKNOWN",
        Some(other) => panic!("{at}: flag {other} not in the samples"),
    };
    assert_eq!(shown["interpretation"], flag, "{at}: flag");
}

#[tokio::test]
async fn every_valid_fhir_lab_example_reaches_the_ordering_clinics_inbox_and_invalid_ones_are_refused()
 {
    let flow = ResultsFlow::start().await;
    // (file, endpoint, sender, ordering clinic, the source Observations in report order)
    let clins_bundle =
        fhir_fixture("jp-clins-lab/Bundle-Bundle-CLINS-Observations-Example-01.json");
    let core_report =
        fhir_fixture("jp-core-lab/DiagnosticReport-jp-diagnosticreport-labresult-example-1.json");
    let examples = [
        (
            "jp-clins-lab/Observation-Example-JP-Obs-LabResult-eCS-K.json",
            "Observation",
            "lab-kensa",
            "hospital-clins",
        ),
        (
            "jp-clins-lab/Observation-Example-JP-Obs-LabResult-eCS-Alb.json",
            "Observation",
            "lab-kensa",
            "hospital-clins",
        ),
        (
            "jp-clins-lab/Bundle-Bundle-CLINS-Observations-Example-01.json",
            "Bundle",
            "lab-kensa",
            "hospital-clins",
        ),
        // A hospital's own laboratory, reporting its own orders.
        (
            "jp-core-lab/Observation-jp-observation-labresult-example-1.json",
            "Observation",
            "hospital-toro",
            "hospital-toro",
        ),
        (
            "jp-core-lab/DiagnosticReport-jp-diagnosticreport-labresult-example-1.json",
            "DiagnosticReport",
            "hospital-toro",
            "hospital-toro",
        ),
    ];
    for (file, endpoint, sender, clinic) in examples {
        let source = fhir_fixture(file);
        let (status, accepted) = flow.send_fhir(sender, endpoint, &source).await;
        assert_eq!(status, 201, "{file}: {accepted}");
        let key = format!("{sender}/{}", accepted["report_id"].as_str().unwrap());
        let shown = flow
            .wait_for(clinic, &key, |r| r["event_id"] == accepted["event_id"])
            .await;
        let observations: Vec<Value> = match endpoint {
            "Observation" => vec![source.clone()],
            "Bundle" => clins_bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"].clone())
                .filter(|r| r["resourceType"] == "Observation")
                .collect(),
            _ => core_report["contained"].as_array().unwrap().clone(),
        };
        let results = shown["results"].as_array().unwrap();
        assert_eq!(results.len(), observations.len(), "{file}");
        for (i, (o, r)) in observations.iter().zip(results).enumerate() {
            assert_observation_as_sent(&format!("{file} result {i}"), o, r);
        }
        assert_eq!(shown["status"], "final", "{file}");
        // Nobody else sees it.
        for other in ["clinic-sakura", "hospital-toro", "hospital-clins"] {
            if other != clinic {
                let (status, _) = flow.get(other, &report_path(&key)).await;
                assert_eq!(status, 404, "{file} leaked to {other}");
            }
        }
    }
    // JP-CLINS names the patient by insurance: the same patient as the prescriptions' Coverage,
    // never the raw member id.
    let (_, k) = flow
        .send_fhir(
            "lab-kensa",
            "Observation",
            &fhir_fixture("jp-clins-lab/Observation-Example-JP-Obs-LabResult-eCS-K.json"),
        )
        .await;
    assert_eq!(k["patient_ref"], "jp-insured:00012345:あいう:187:05");
    // Japanese text intact.
    let shown = flow
        .wait_for(
            "hospital-clins",
            &format!("lab-kensa/{}", k["report_id"].as_str().unwrap()),
            |_| true,
        )
        .await;
    assert_eq!(shown["results"][0]["other_codes"][0]["display"], "カリウム");
    assert_eq!(shown["specimen"]["specimen_type"]["display"], "血清");

    // Refused, each with an OperationOutcome saying where and why; nothing published.
    let before = reports(&flow.stack).await.len();
    let error_example = fhir_fixture("jp-clins-lab/Observation-ErrorExample-ObsLabo-eGFR.json");
    let (status, outcome) = flow
        .send_fhir("lab-kensa", "Observation", &error_example)
        .await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "Observation.code.coding"
    );
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("local code")
    );
    let mut no_value = fhir_fixture("jp-clins-lab/Observation-Example-JP-Obs-LabResult-eCS-K.json");
    no_value.as_object_mut().unwrap().remove("valueQuantity");
    let mut no_subject =
        fhir_fixture("jp-core-lab/Observation-jp-observation-labresult-example-1.json");
    no_subject.as_object_mut().unwrap().remove("subject");
    let mut dangling = core_report.clone();
    dangling["result"][0]["reference"] = "#nowhere".into();
    let mut many = clins_bundle.clone();
    let entry = many["entry"][1].clone();
    many["entry"] = Value::Array(std::iter::repeat_n(entry, 501).collect());
    for (what, endpoint, body, status) in [
        ("no value", "Observation", no_value, 422),
        ("no patient", "Observation", no_subject, 422),
        (
            "a result it does not hold",
            "DiagnosticReport",
            dangling,
            422,
        ),
        (
            "a Patient",
            "Observation",
            serde_json::json!({"resourceType": "Patient"}),
            400,
        ),
        ("501 results", "Bundle", many, 422),
    ] {
        let (got, outcome) = flow.send_fhir("lab-kensa", endpoint, &body).await;
        assert_eq!(got, status, "{what}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
    }
    let not_json = flow
        .http
        .post(format!("{}/fhir/Observation", flow.lab_url))
        .bearer_auth(&flow.keys["lab-kensa"])
        .header("content-type", "application/fhir+json")
        .body("{\"resourceType\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let xml = flow
        .http
        .post(format!("{}/fhir/Observation", flow.lab_url))
        .bearer_auth(&flow.keys["lab-kensa"])
        .header("content-type", "application/fhir+xml")
        .body("<Observation/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 415);
    // A clinic does not send results.
    let (status, _) = flow
        .send_fhir("clinic-sakura", "Observation", &error_example)
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        reports(&flow.stack).await.len(),
        before,
        "nothing refused was published"
    );
    flow.stop().await;
}

#[tokio::test]
async fn malformed_hl7_gets_ae_or_ar_with_the_reason_publishes_nothing_and_the_gateway_keeps_serving()
 {
    let stack = BusStack::start().await;
    let mut directory = Directory::from_toml(ORGANIZATIONS).unwrap();
    let lab = directory.issue_key("lab-kensa").unwrap();
    let directory = Arc::new(directory);
    let db = fresh_database(Backend::Sqlite).await;
    let mllp = format!("127.0.0.1:{}", free_port());
    let (url, service) = start_service_with(
        Kind::LabGateway,
        &stack,
        &directory,
        Some(&db),
        &[
            ("mllp_listen", &mllp),
            ("mllp_senders", "lab-kensa=127.0.0.1"),
            ("mllp_frame_timeout_secs", "1"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let good = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7")).unwrap();
    let many_results = {
        let obx = good.split('\r').find(|s| s.starts_with("OBX|")).unwrap();
        let mut m = good.clone();
        for _ in 0..501 {
            m.push_str(obx);
            m.push('\r');
        }
        m
    };
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "no MSH",
            good.split_once('\r').unwrap().1.as_bytes().to_vec(),
        ),
        ("binary", (0u8..=255).cycle().take(4096).collect()),
        (
            "delimiters that repeat",
            good.replacen("MSH|^~\\&|", "MSH|^^^^|", 1).into_bytes(),
        ),
        (
            "segments split by another delimiter",
            good.replacen("\rPID|", "\rPID#", 1).into_bytes(),
        ),
        ("truncated", good.as_bytes()[..300].to_vec()),
        (
            "not UTF-8 though it says so",
            good.replacen("~ISO IR87", "UNICODE UTF-8", 1)
                .replacen("総蛋白", "\u{FFFD}", 1)
                .into_bytes()
                .into_iter()
                .map(|b| if b == 0xEF { 0xFF } else { b })
                .collect(),
        ),
        (
            "an unknown character set",
            good.replacen("~ISO IR87", "EBCDIC", 1).into_bytes(),
        ),
        (
            "an unknown message type",
            good.replacen("OUL^R22^OUL_R22", "ZZZ^Z01^ZZZ_Z01", 1)
                .into_bytes(),
        ),
        (
            "version 3",
            good.replacen("|P|2.5|", "|P|3.0|", 1).into_bytes(),
        ),
        (
            "no patient id",
            good.replacen("PID|0001||0001000052", "PID|0001||", 1)
                .into_bytes(),
        ),
        ("501 results", many_results.into_bytes()),
        (
            "70,000 empty fields",
            format!("{good}OBX{}\r", "|".repeat(70_000)).into_bytes(),
        ),
        (
            "a date that is not one",
            good.replacen("|201112191500\rOBR", "|2011-12-19\rOBR", 1)
                .into_bytes(),
        ),
    ];
    for (what, message) in &corpus {
        let answer = http
            .post(format!("{url}/hl7v2"))
            .bearer_auth(lab.expose())
            .header("content-type", "application/hl7-v2")
            .body(message.clone())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let ack = String::from_utf8_lossy(&answer.bytes().await.unwrap()).into_owned();
        assert!((400..500).contains(&status), "{what}: {status} {ack}");
        assert!(
            ack.contains("\rMSA|AE|") || ack.contains("\rMSA|AR|"),
            "{what}: {ack}"
        );
        let err = ack.split('\r').find(|s| s.starts_with("ERR|"));
        let reason = err.and_then(|e| e.split('|').nth(8)).unwrap_or("");
        assert!(!reason.is_empty(), "{what}: the ERR says why: {ack}");
    }
    // Ten megabytes: refused before it is read whole.
    let huge = {
        let mut m = good.clone().into_bytes();
        m.resize(10 * 1024 * 1024, b'A');
        m
    };
    let answer = http
        .post(format!("{url}/hl7v2"))
        .bearer_auth(lab.expose())
        .header("content-type", "application/hl7-v2")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    assert_eq!(
        reports(&stack).await.len(),
        0,
        "nothing refused was published"
    );

    // Over MLLP: the same corpus, each answered on the connection, which keeps serving.
    let mut stream = tokio::net::TcpStream::connect(&mllp).await.unwrap();
    for (what, message) in &corpus {
        stream.write_all(&framed(message)).await.unwrap();
        let ack = read_frame(&mut stream)
            .await
            .unwrap_or_else(|| panic!("{what}: no ACK"));
        let ack = String::from_utf8_lossy(&ack).into_owned();
        assert!(
            ack.contains("\rMSA|AE|") || ack.contains("\rMSA|AR|"),
            "{what}: {ack}"
        );
    }
    // Ten megabytes in one frame: AR, then the connection is closed.
    let _ = stream.write_all(&framed(&huge)).await;
    let ack = read_frame(&mut stream).await.unwrap();
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AR|"));
    assert!(read_frame(&mut stream).await.is_none());
    // A frame that never ends, however patiently its bytes trickle in: cut at the frame
    // timeout (1 s here) without an answer.
    let mut slow = tokio::net::TcpStream::connect(&mllp).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"\x0bMSH|^~\\&|").await.unwrap();
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"A").await.is_err() {
            break started.elapsed();
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => panic!("a frame that never ended was answered"),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never cut");
    };
    assert!(closed >= Duration::from_secs(1), "cut at {closed:?}");
    assert_eq!(
        reports(&stack).await.len(),
        0,
        "nothing refused was published"
    );

    // And the gateway still takes good messages, on both transports.
    let mut fresh = tokio::net::TcpStream::connect(&mllp).await.unwrap();
    fresh.write_all(&framed(good.as_bytes())).await.unwrap();
    let ack = String::from_utf8(read_frame(&mut fresh).await.unwrap()).unwrap();
    assert!(ack.contains("\rMSA|AA|"), "{ack}");
    assert_eq!(reports(&stack).await.len(), 1);
    service.stop().await;
}

async fn links(stack: &BusStack) -> Vec<hixbus_contracts::PatientLinked> {
    on_topic(stack, "patient-links").await
}

#[tokio::test]
async fn a_lab_links_its_patient_id_by_insurance_and_later_results_carry_the_patients_reference() {
    let flow = ResultsFlow::start().await;
    let key = "lab-kensa/000000001219001";
    let original = String::from_utf8(fixture("SSMIX2-OUL-R22-utf8.hl7")).unwrap();
    flow.send(original.clone().into_bytes()).await;
    let before = flow.wait_for("hospital-toro", key, |_| true).await;
    assert_eq!(
        before["patient_ref"], "local:lab-kensa:0001000052",
        "unlinked: the lab's own id"
    );

    let register = |org: &'static str, body: Value| {
        flow.http
            .put(format!("{}/fhir/Patient/0001000052", flow.lab_url))
            .bearer_auth(&flow.keys[org])
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    let insured = |member: &str| {
        serde_json::json!({
            "resourceType": "Patient",
            "id": "0001000052",
            "identifier": [{
                "system": "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID",
                "value": member
            }]
        })
    };
    // Name and birth date link nobody; a pharmacy registers nothing here.
    let named = serde_json::json!({
        "resourceType": "Patient", "id": "0001000052",
        "name": [{"text": "患者 太郎"}], "birthDate": "1970-04-05"
    });
    let answer = register("lab-kensa", named).await.unwrap();
    assert_eq!(answer.status(), 422);
    let outcome: Value = answer.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let answer = register("pharmacy-aozora", insured("06123456:12345:67890:01"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    assert!(links(&flow.stack).await.is_empty());

    // Linked by insurance: one PatientLinked says the local id is this patient.
    let answer = register("lab-kensa", insured("06123456:１２３４５:67890:01"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let linked = links(&flow.stack).await;
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].local_ref, "local:lab-kensa:0001000052");
    assert_eq!(
        linked[0].envelope.patient_ref,
        "jp-insured:06123456:12345:67890:01"
    );
    assert_eq!(linked[0].source, hixbus_contracts::LinkSource::Registered);
    // The same again changes nothing and says nothing new.
    let answer = register("lab-kensa", insured("06123456:12345:67890:01"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(links(&flow.stack).await.len(), 1);

    // The next result for that id carries the patient's reference from the start.
    let next = with_msh(&original, 10, "AFTER-LINK").replace("000000001219001", "000000001219009");
    flow.send(next.into_bytes()).await;
    let after = flow
        .wait_for("hospital-toro", "lab-kensa/000000001219009", |_| true)
        .await;
    assert_eq!(after["patient_ref"], "jp-insured:06123456:12345:67890:01");

    // A new insurance card: a new link, naming the one it replaces.
    let answer = register("lab-kensa", insured("138016:1:2:00"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let changed: Value = answer.json().await.unwrap();
    assert_eq!(
        changed["previous_ref"],
        "jp-insured:06123456:12345:67890:01"
    );
    let linked = links(&flow.stack).await;
    assert_eq!(linked.len(), 2);
    // Keyed by the patient: the two links are on their own partitions, in no order between them.
    let new = linked
        .iter()
        .find(|l| l.envelope.patient_ref == "jp-insured:138016:1:2:00")
        .unwrap();
    assert_eq!(
        new.previous_ref.as_deref(),
        Some("jp-insured:06123456:12345:67890:01")
    );

    // A hospital's prescription names its patient by its own id and by insurance: the link is
    // learned there, and the hospital's own lab results for that id carry the patient's
    // reference once the lab gateway has it.
    let mut bundle: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{}/fixtures/fhir/jp-eprescription/Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    bundle["identifier"]["value"] = serde_json::json!("urn:uuid:identity-test");
    for entry in bundle["entry"].as_array_mut().unwrap() {
        match entry["resource"]["resourceType"].as_str() {
            Some("Composition") => entry["resource"]["date"] = serde_json::json!(now),
            Some("MedicationRequest") => entry["resource"]["authoredOn"] = serde_json::json!(now),
            _ => {}
        }
    }
    let issued = flow
        .http
        .post(format!("{}/fhir/Bundle", flow.clinic_url))
        .bearer_auth(&flow.keys["hospital-toro"])
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 202);
    let issued: Value = issued.json().await.unwrap();
    let insured = issued["patient_ref"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let learned = loop {
        let found = links(&flow.stack)
            .await
            .into_iter()
            .find(|l| l.local_ref == "local:hospital-toro:00000010");
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no link learned from the prescription"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(learned.source, hixbus_contracts::LinkSource::Prescription);
    assert_eq!(learned.envelope.patient_ref, insured);
    let own_result = |n: usize| {
        with_msh(&original, 10, &format!("OWN-{n}"))
            .replace("000000001219001", &format!("0000000012190{n:02}"))
            .replace("PID|0001||0001000052", "PID|0001||00000010")
    };
    let mut n = 50;
    loop {
        let answer = flow
            .http
            .post(format!("{}/hl7v2", flow.lab_url))
            .bearer_auth(&flow.keys["hospital-toro"])
            .header("content-type", "application/hl7-v2")
            .body(own_result(n))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let shown = flow
            .wait_for(
                "hospital-toro",
                &format!("hospital-toro/0000000012190{n:02}"),
                |_| true,
            )
            .await;
        if shown["patient_ref"] == insured.as_str() {
            break;
        }
        assert_eq!(shown["patient_ref"], "local:hospital-toro:00000010");
        assert!(
            Instant::now() < deadline,
            "the lab gateway never learned the link"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flow.stop().await;
}
