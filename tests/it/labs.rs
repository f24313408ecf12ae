//! Lab results end to end on a real broker: HL7 v2 messages POSTed to the lab gateway become
//! `LabResultReported` on `lab-results`, each answered with its ACK only after it was published;
//! refused messages are answered AE/AR with the reason and publish nothing.

use std::sync::Arc;

use hixbus::stack::Kind;
use hixbus_access::Directory;
use hixbus_bus::reader::{Start, TopicReader};
use hixbus_contracts::{Event, LabResultReported, ReportStatus};
use hixbus_tests::{Backend, BusStack, fresh_database, start_service, start_service_with};
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

async fn reports(stack: &BusStack) -> Vec<LabResultReported> {
    let records = TopicReader::open(&stack.kafka, "lab-results", Start::Beginning)
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    let codec = stack.codec();
    let mut reports = Vec::new();
    for record in records {
        let decoded = codec
            .decode(record.payload.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        if let Event::LabResultReported(e) = decoded.event {
            reports.push(e);
        }
    }
    reports
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

/// A free port on the loopback address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads one MLLP frame (its body) from `stream`, or `None` if the connection closed first.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut byte))
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
