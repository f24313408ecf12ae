//! What a careless or hostile client did to the prescription flow, one test per finding (see
//! docs/reliability.md). Each failed on the code before the fix.

use std::time::{Duration, Instant};

use hixbus_contracts::lifecycle::today_in_japan;
use hixbus_storage::Database;
use hixbus_tests::Backend;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::prescriptions::{Flow, fixture, numbered_bundle, pharmacist};

const EXAMPLE: &str = "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json";

/// A prescription of `lines` lines, every one the example's first drug (carbocisteine), for a
/// patient of its own.
fn bundle_of(patient: usize, lines: usize) -> Value {
    let mut bundle = numbered_bundle(patient);
    bundle["identifier"]["value"] = json!(hixbus_tests::unique("urn:uuid:many"));
    let entries = bundle["entry"].as_array_mut().unwrap();
    let first = entries
        .iter()
        .position(|e| e["resource"]["resourceType"] == "MedicationRequest")
        .unwrap();
    let template = entries[first].clone();
    entries.retain(|e| e["resource"]["resourceType"] != "MedicationRequest");
    for n in 0..lines {
        let mut entry = template.clone();
        entry["fullUrl"] = json!(format!("urn:uuid:00000000-0000-4000-8000-{n:012}"));
        entry["resource"]["id"] = json!(format!("line-{n}"));
        entry["resource"]["identifier"][0]["value"] = json!(format!("{}", n + 1));
        entries.push(entry);
    }
    bundle
}

fn issue_date_of(bundle: &mut Value, date: &str) {
    for entry in bundle["entry"].as_array_mut().unwrap() {
        match entry["resource"]["resourceType"].as_str() {
            Some("Composition") => entry["resource"]["date"] = json!(date),
            Some("MedicationRequest") => entry["resource"]["authoredOn"] = json!(date),
            _ => {}
        }
    }
}

fn first_request(bundle: &mut Value) -> &mut Value {
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["resource"]["resourceType"] == "MedicationRequest")
        .map(|e| &mut e["resource"])
        .unwrap()
}

fn expression(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["expression"][0].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Finding 1: one prescription dated 9999-12-31 switched the duplicate check off for everyone.
#[tokio::test]
async fn a_prescription_dated_9999_is_refused_and_cannot_switch_the_safety_check_off() {
    let flow = Flow::start().await;
    let mut far = numbered_bundle(9001);
    issue_date_of(&mut far, "9999-12-31");
    let (status, refused) = flow
        .issue("clinic-sakura", &far, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(expression(&refused), ["Composition.date"]);

    // Even if such an event reaches the bus some other way (here: for the same patient, so it
    // is on the same partition and surely read in between), the check keeps working.
    let first = fixture(EXAMPLE);
    let (status, accepted) = flow
        .issue("hospital-daiichi", &first, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 202, "{accepted}");
    let first_id = accepted["prescription_id"].as_str().unwrap().to_owned();
    let patient = accepted["patient_ref"].as_str().unwrap();
    flow.in_inbox("pharmacy-aozora", &first_id, |_| true).await;
    let mut rogue = hixbus_contracts::samples::prescription_issued(patient, 1);
    rogue.prescription_id = hixbus_tests::unique("rx-rogue");
    rogue.envelope.event_id = uuid::Uuid::now_v7().to_string();
    rogue.issued_on = hixbus_contracts::Date::from_ymd(9999, 12, 31).unwrap();
    flow.stack.publisher().publish(&rogue).await.unwrap();
    let mut second = fixture(EXAMPLE);
    second["identifier"]["value"] = json!(hixbus_tests::unique("urn:uuid:second"));
    let second_id = flow
        .issue_delivered("clinic-sakura", &second, "pharmacy-midori")
        .await;
    // The second is checked against the first: the pharmacy holding the second sees the
    // alert (the first's side withheld without the patient's consent), the one holding the
    // first sees its own line in it.
    let item = flow
        .in_inbox("pharmacy-midori", &second_id, |item| {
            item["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(item["alerts"][0]["withheld"]["lines"], 1, "{item}");
    let item = flow
        .in_inbox("pharmacy-aozora", &first_id, |item| {
            item["alerts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let involved = item["alerts"][0]["involved"].to_string();
    assert!(involved.contains(&first_id), "{item}");
    flow.stop().await;
}

/// Finding 2: alerts grew with the square of the line count; prescriptions had no line bound.
#[tokio::test]
async fn lines_are_bounded_and_two_long_prescriptions_of_one_drug_raise_one_alert() {
    let flow = Flow::start().await;
    let max = hixbus_contracts::lifecycle::MAX_LINES;
    let (status, refused) = flow
        .issue(
            "clinic-sakura",
            &bundle_of(9002, max + 1),
            Some("pharmacy-aozora"),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.to_string().contains("at most 60 lines"),
        "{refused}"
    );

    let first = bundle_of(9003, max);
    flow.issue_delivered("hospital-daiichi", &first, "pharmacy-aozora")
        .await;
    let mut second = bundle_of(9003, max);
    second["identifier"]["value"] = json!(hixbus_tests::unique("urn:uuid:second"));
    let second_id = flow
        .issue_delivered("clinic-sakura", &second, "pharmacy-aozora")
        .await;
    flow.in_inbox("pharmacy-aozora", &second_id, |item| {
        item["alerts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    // Give a second alert time to arrive, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let item = flow.in_inbox("pharmacy-aozora", &second_id, |_| true).await;
    let alerts = item["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "one alert, not 60 × 60");
    assert_eq!(alerts[0]["involved"].as_array().unwrap().len(), 20);
    assert!(
        alerts[0]["message"]
            .as_str()
            .unwrap()
            .contains("100 more lines"),
        "{}",
        alerts[0]["message"]
    );
    assert!(
        item.to_string().len() < 200_000,
        "an inbox item stays small: {} bytes",
        item.to_string().len()
    );
    flow.stop().await;
}

/// Finding 3: 1e308 tablets against 21, negative days, a "substitute" in kilograms.
#[tokio::test]
async fn a_pharmacy_cannot_record_more_than_was_prescribed_or_nonsense() {
    let flow = Flow::start().await;
    let id = flow
        .issue_delivered("clinic-sakura", &numbered_bundle(9004), "pharmacy-aozora")
        .await;
    let tablets = |value: f64| json!({"value": value, "unit": "錠"});
    let cases = [
        (json!({"line_no": 1, "quantity": tablets(1e308)}), "at most"),
        (
            json!({"line_no": 1, "quantity": tablets(-21.0)}),
            "positive",
        ),
        (json!({"line_no": 1, "days_supply": -7}), "days_supply"),
        (
            json!({"line_no": 1, "days_supply": 30}),
            "more than the 7 days",
        ),
        (
            json!({"line_no": 1, "quantity": tablets(22.0)}),
            "state the reason",
        ),
        (
            json!({"line_no": 1, "quantity": tablets(43.0), "reason": "規格変更"}),
            "more than twice",
        ),
        (
            json!({"line_no": 1, "quantity": {"value": 21.0, "unit": "kg"}}),
            "prescribed unit",
        ),
        (
            json!({"line_no": 2, "substitute": {"system": "http://example.org/anything", "code": "x", "display": "?"}}),
            "HOT9",
        ),
        (
            json!({"line_no": 2, "substitute": {"system": "urn:oid:1.2.392.200119.4.403.1", "code": "12ab", "display": "?"}}),
            "not a valid code",
        ),
    ];
    for (line, says) in cases {
        let mut body = pharmacist();
        body["lines"] = json!([line]);
        let (status, refused) = flow.dispense("pharmacy-aozora", &id, body).await;
        assert_eq!(status, 422, "{line}: {refused}");
        assert!(
            refused["reason"].as_str().unwrap().contains(says),
            "{line}: {refused}"
        );
    }
    // More than prescribed with a reason (a change of strength) is a pharmacist's call.
    let mut body = pharmacist();
    body["lines"] =
        json!([{"line_no": 1, "quantity": tablets(42.0), "reason": "規格変更 (125 mg ×2)"}]);
    let (status, dispensed) = flow.dispense("pharmacy-aozora", &id, body).await;
    assert_eq!(status, 200, "{dispensed}");
    flow.stop().await;
}

/// Finding 4: dates never range-checked, days supply clamped, expiry in UTC.
#[tokio::test]
async fn dates_and_days_are_range_checked_in_japan_time() {
    let flow = Flow::start().await;
    let today = today_in_japan();
    for (date, says) in [
        ("0000-01-01", "expired"),
        ("9999-12-31", "after today"),
        (&*today.plus_days(-4).to_string(), "expired"),
        (&*today.plus_days(1).to_string(), "after today"),
    ] {
        let mut bundle = numbered_bundle(9005);
        issue_date_of(&mut bundle, date);
        let (status, refused) = flow
            .issue("clinic-sakura", &bundle, Some("pharmacy-aozora"))
            .await;
        assert_eq!(status, 422, "{date}: {refused}");
        assert!(refused.to_string().contains(says), "{date}: {refused}");
    }
    let mut huge_days = numbered_bundle(9006);
    first_request(&mut huge_days)["dispenseRequest"]["expectedSupplyDuration"]["value"] =
        json!(1e12);
    let (status, refused) = flow
        .issue("clinic-sakura", &huge_days, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("days supply"), "{refused}");

    // Straight onto the bus: one not valid before tomorrow, and one whose last valid day was
    // yesterday in Japan (still "today" in UTC from 15:00 to 24:00 UTC).
    for (issued, expires, error) in [
        (today.plus_days(1), today.plus_days(4), "not_yet_valid"),
        (today.plus_days(-4), today.plus_days(-1), "expired"),
    ] {
        let mut e = hixbus_contracts::samples::prescription_issued("patient:dates", 1);
        e.prescription_id = hixbus_tests::unique("rx-dates");
        e.envelope.event_id = uuid::Uuid::now_v7().to_string();
        e.target_pharmacy_org = Some("pharmacy-aozora".to_owned());
        e.issued_on = issued;
        e.expires_on = Some(expires);
        flow.stack.publisher().publish(&e).await.unwrap();
        flow.in_inbox("pharmacy-aozora", &e.prescription_id, |_| true)
            .await;
        let (status, refused) = flow
            .dispense("pharmacy-aozora", &e.prescription_id, pharmacist())
            .await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (409, Some(error)),
            "{refused}"
        );
    }
    flow.stop().await;
}

/// Finding 5: a replay with other content answered `replayed: true` with the new content.
#[tokio::test]
async fn a_used_identifier_with_other_content_is_refused_and_changes_nothing() {
    let flow = Flow::start().await;
    let original = numbered_bundle(9007);
    let (status, first) = flow
        .issue("clinic-sakura", &original, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 202, "{first}");
    let id = first["prescription_id"].as_str().unwrap();
    // Byte-for-byte different but the same content: a replay.
    let reformatted: Value = serde_json::from_str(&original.to_string()).unwrap();
    let (status, again) = flow
        .issue("clinic-sakura", &reformatted, Some("pharmacy-aozora"))
        .await;
    assert_eq!((status, again["replayed"].as_bool()), (202, Some(true)));
    assert_eq!(again["access_code"], first["access_code"]);

    let other_patient = {
        let mut b = numbered_bundle(9008);
        b["identifier"] = original["identifier"].clone();
        b
    };
    let other_pharmacy = original.clone();
    let other_drug = {
        let mut b = original.clone();
        first_request(&mut b)["dispenseRequest"]["quantity"]["value"] = json!(14);
        b
    };
    for (bundle, pharmacy) in [
        (&other_patient, "pharmacy-aozora"),
        (&other_pharmacy, "pharmacy-midori"),
        (&other_drug, "pharmacy-aozora"),
    ] {
        let (status, refused) = flow.issue("clinic-sakura", bundle, Some(pharmacy)).await;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(refused["issue"][0]["code"], "duplicate");
        assert!(refused.to_string().contains("already used"), "{refused}");
    }
    let seen = flow.clinic_sees("clinic-sakura", id, "issued").await;
    assert_eq!(seen["patient_ref"], first["patient_ref"]);
    let patients: Vec<String> = {
        let db = Database::connect(&flow.gateway_db).await.unwrap();
        sqlx::query_scalar("SELECT DISTINCT patient_ref FROM audit_log WHERE subject_id = $1")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };
    assert_eq!(
        patients,
        [first["patient_ref"].as_str().unwrap()],
        "no audit row puts another patient on this prescription"
    );
    flow.stop().await;
}

/// Finding 6: the access code travelled in the payload and rested beside its hash.
#[tokio::test]
async fn access_codes_never_travel_or_rest_in_the_clear() {
    let flow = Flow::start().await;
    let (status, accepted) = flow
        .issue("clinic-sakura", &numbered_bundle(9009), None)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let code = accepted["access_code"].as_str().unwrap().to_owned();
    let id = accepted["prescription_id"].as_str().unwrap().to_owned();

    let records = hixbus_bus::reader::TopicReader::open(
        &flow.stack.kafka,
        "prescriptions",
        hixbus_bus::reader::Start::Beginning,
    )
    .unwrap()
    .read_to_end()
    .await
    .unwrap();
    let codec = flow.stack.codec();
    let mut seen = false;
    for record in records {
        let payload = record.payload.unwrap();
        assert!(
            !payload.windows(code.len()).any(|w| w == code.as_bytes()),
            "the code is in a record's bytes"
        );
        let decoded = codec.decode(&payload).await.unwrap().unwrap();
        if let hixbus_contracts::Event::PrescriptionIssued(e) = decoded.event
            && e.prescription_id == id
        {
            assert_eq!(e.access_code, "");
            let digest = e.access_code_digest.unwrap();
            assert!(!digest.contains(&code));
            seen = true;
        }
    }
    assert!(seen);

    // Claimable by the code, and the pharmacy's database holds it nowhere.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = flow
            .call(
                Some("pharmacy-midori"),
                "POST",
                format!("{}/pharmacy/claims", flow.pharmacy),
                Some(json!({ "access_code": code.to_lowercase() })),
            )
            .await;
        if status == 200 {
            assert_eq!(body["claimed"], json!([id]));
            break;
        }
        assert!(Instant::now() < deadline, "never claimable: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = Database::connect(&flow.pharmacy_db).await.unwrap();
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT issued, access_code_sha256, access_code_digest FROM pharmacy_prescriptions",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (issued, sha, digest) in rows {
        assert!(!issued.contains(&code), "{issued}");
        assert!(sha.is_empty());
        assert!(!digest.unwrap_or_default().contains(&code));
    }
    flow.stop().await;
}

/// Finding 8: one pharmacy's parallel large reads starved the others.
#[tokio::test]
async fn one_pharmacy_flooding_its_inbox_cannot_starve_another() {
    let flow = Flow::start_on(Backend::Sqlite).await;
    for n in 0..30 {
        flow.issue(
            "clinic-sakura",
            &numbered_bundle(9100 + n),
            Some("pharmacy-aozora"),
        )
        .await;
    }
    let midori_id = flow
        .issue_delivered("clinic-sakura", &numbered_bundle(9200), "pharmacy-midori")
        .await;
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let (http, url, key) = (
                flow.http.clone(),
                format!("{}/pharmacy/inbox?limit=500", flow.pharmacy),
                flow.keys["pharmacy-aozora"].expose().to_owned(),
            );
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let started = Instant::now();
    let midori = flow.inbox("pharmacy-midori").await;
    let waited = started.elapsed();
    let mut statuses = Vec::new();
    for request in flood {
        statuses.push(request.await.unwrap().unwrap());
    }
    assert!(midori.iter().any(|p| p["prescription_id"] == midori_id));
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the flood is cut at the pharmacy's allowance: {statuses:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    flow.stop().await;
}

/// Finding 9, the smaller ones.
#[tokio::test]
async fn a_guesser_cannot_lock_a_pharmacy_out_of_its_own_claims() {
    let flow = Flow::start().await;
    let (_, accepted) = flow
        .issue("clinic-sakura", &numbered_bundle(9010), None)
        .await;
    let code = accepted["access_code"].as_str().unwrap().to_owned();
    flow.settle().await;
    let guesser = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let key = flow.keys["pharmacy-aozora"].expose().to_owned();
    let mut locked = false;
    for n in 0..=hixbus_pharmacy::claims::FAILURES_PER_MINUTE {
        let status = guesser
            .post(format!("{}/pharmacy/claims", flow.pharmacy))
            .bearer_auth(&key)
            .json(&json!({ "access_code": format!("GUESS{n:03}") }))
            .send()
            .await
            .unwrap()
            .status();
        locked |= status == 429;
    }
    assert!(locked, "the guessing address is cut off");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = flow
            .call(
                Some("pharmacy-aozora"),
                "POST",
                format!("{}/pharmacy/claims", flow.pharmacy),
                Some(json!({ "access_code": code })),
            )
            .await;
        if status == 200 {
            break;
        }
        assert_ne!(status, 429, "the counter terminal was locked out: {body}");
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flow.stop().await;
}

impl Flow {
    /// Gives an open prescription (in nobody's inbox yet) a moment to reach the read model.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    /// (status, body) of a request sent exactly as given (raw content type and body).
    async fn raw(&self, org: &str, url: String, content_type: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(url)
            .bearer_auth(self.keys[org].expose())
            .header("content-type", content_type)
            .body(body.to_owned())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test]
async fn bad_text_duplicate_entries_and_the_wrong_media_type_are_refused() {
    let flow = Flow::start().await;
    // Each refused with the precise location.
    let mut twice = numbered_bundle(9011);
    let request = twice["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "MedicationRequest")
        .cloned()
        .unwrap();
    twice["entry"].as_array_mut().unwrap().push(request);
    let mut two_patients = numbered_bundle(9012);
    let mut patient = two_patients["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .cloned()
        .unwrap();
    patient["fullUrl"] = json!("urn:uuid:second-patient");
    patient["resource"]["id"] = json!("second-patient");
    two_patients["entry"].as_array_mut().unwrap().push(patient);
    let mut long_identifier = numbered_bundle(9013);
    long_identifier["identifier"]["value"] = json!("x".repeat(1_000_000));
    let mut nul = numbered_bundle(9014);
    first_request(&mut nul)["dosageInstruction"][0]["text"] = json!("1日3回\u{0}毎食後");
    let mut escape = numbered_bundle(9015);
    first_request(&mut escape)["medicationCodeableConcept"]["text"] =
        json!("\u{1b}[2Jカルボシステイン");
    let mut bidi = numbered_bundle(9016);
    first_request(&mut bidi)["dosageInstruction"][0]["text"] = json!("1回\u{202e}01\u{202c}錠");
    for (bundle, says) in [
        (&twice, "repeats an earlier one"),
        (&two_patients, "2 Patient resources"),
        (&long_identifier, "at most"),
        (&nul, "U+0000"),
        (&escape, "U+001B"),
        (&bidi, "U+202E"),
    ] {
        let (status, refused) = flow
            .issue("clinic-sakura", bundle, Some("pharmacy-aozora"))
            .await;
        assert_eq!(status, 422, "{says}: {refused}");
        assert!(refused.to_string().contains(says), "{says}: {refused}");
    }
    let id = flow
        .issue_delivered("clinic-sakura", &numbered_bundle(9017), "pharmacy-aozora")
        .await;
    let (status, refused) = flow
        .raw(
            "pharmacy-aozora",
            format!("{}/pharmacy/prescriptions/{id}/dispense", flow.pharmacy),
            "text/plain",
            &pharmacist().to_string(),
        )
        .await;
    assert_eq!(status, 415, "{refused}");
    let (status, refused) = flow
        .raw(
            "pharmacy-aozora",
            format!("{}/pharmacy/claims", flow.pharmacy),
            "text/plain",
            r#"{"access_code":"AAAA2222"}"#,
        )
        .await;
    assert_eq!(status, 415, "{refused}");
    let mut body = pharmacist();
    body["notes"] = json!("ok\u{7}");
    let (status, refused) = flow.dispense("pharmacy-aozora", &id, body).await;
    assert_eq!(status, 422, "{refused}");
    flow.stop().await;
}

#[tokio::test]
async fn a_request_that_promises_a_body_and_goes_silent_is_closed() {
    let flow = Flow::start().await;
    let addr = flow.gateway.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /fhir/Bundle HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/fhir+json\r\ncontent-length: 1000\r\n\r\n{{\"resourceType\"",
        flow.keys["clinic-sakura"].expose()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was held open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
    flow.stop().await;
}

#[tokio::test]
async fn live_streams_are_limited_per_pharmacy() {
    let flow = Flow::start().await;
    let max = hixbus_pharmacy::routes::STREAMS_PER_PHARMACY;
    let mut open = Vec::new();
    for _ in 0..max {
        let response = flow.inbox_stream("pharmacy-aozora").await;
        assert_eq!(response.status().as_u16(), 200);
        open.push(response);
    }
    let refused = flow.inbox_stream("pharmacy-aozora").await;
    assert_eq!(refused.status().as_u16(), 429);
    let other = flow.inbox_stream("pharmacy-midori").await;
    assert_eq!(other.status().as_u16(), 200, "another pharmacy still may");
    drop(open.pop());
    // The closed stream's allowance comes back once the server notices.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = flow.inbox_stream("pharmacy-aozora").await;
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(other);
    drop(open);
    flow.stop().await;
}

#[tokio::test]
async fn refused_requests_and_wrong_access_codes_are_audited() {
    let flow = Flow::start().await;
    let id = flow
        .issue_delivered("clinic-sakura", &numbered_bundle(9018), "pharmacy-aozora")
        .await;
    let url = |path: &str| format!("{}{path}", flow.pharmacy);
    let (status, _) = flow.call(None, "GET", url("/pharmacy/inbox"), None).await;
    assert_eq!(status, 401);
    let (status, _) = flow
        .call(Some("clinic-sakura"), "GET", url("/pharmacy/inbox"), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = flow
        .call(
            Some("pharmacy-midori"),
            "GET",
            url(&format!("/pharmacy/prescriptions/{id}")),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = flow
        .call(
            Some("pharmacy-midori"),
            "POST",
            url("/pharmacy/claims"),
            Some(json!({"access_code": "WRONG222"})),
        )
        .await;
    assert_eq!(status, 404);
    let db = Database::connect(&flow.pharmacy_db).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT org_id, action, subject_id FROM audit_log WHERE action LIKE 'denied.%' ORDER BY at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected = [
        ("anonymous", "denied.401", "GET /pharmacy/inbox".to_owned()),
        (
            "clinic-sakura",
            "denied.403",
            "GET /pharmacy/inbox".to_owned(),
        ),
        (
            "pharmacy-midori",
            "denied.404",
            format!("GET /pharmacy/prescriptions/{id}"),
        ),
        (
            "pharmacy-midori",
            "denied.404",
            "POST /pharmacy/claims".to_owned(),
        ),
    ];
    let rows: Vec<(&str, &str, String)> = rows
        .iter()
        .map(|(o, a, s)| (o.as_str(), a.as_str(), s.clone()))
        .collect();
    assert_eq!(rows, expected);

    // The gateway audits its refusals the same way.
    let (status, _) = flow
        .call(
            Some("pharmacy-aozora"),
            "GET",
            format!("{}/clinic/prescriptions/{id}", flow.gateway),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let db = Database::connect(&flow.gateway_db).await.unwrap();
    // The issuing clinic's own polling (`issue_delivered`) may have been answered 404 while the
    // view caught up, and audited so, rightly: only the pharmacy's refusal is this check's.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT org_id, action, subject_id FROM audit_log
         WHERE action LIKE 'denied.%' AND org_id <> 'clinic-sakura'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [(
            "pharmacy-aozora".to_owned(),
            "denied.403".to_owned(),
            format!("GET /clinic/prescriptions/{id}")
        )]
    );
    flow.stop().await;
}

#[tokio::test]
async fn a_dispensing_that_cannot_be_audited_does_not_take_effect() {
    let flow = Flow::start().await;
    let id = flow
        .issue_delivered("clinic-sakura", &numbered_bundle(9019), "pharmacy-aozora")
        .await;
    let db = Database::connect(&flow.pharmacy_db).await.unwrap();
    sqlx::query("ALTER TABLE audit_log RENAME TO audit_log_away")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, refused) = flow.dispense("pharmacy-aozora", &id, pharmacist()).await;
    assert_eq!(status, 503, "{refused}");
    sqlx::query("ALTER TABLE audit_log_away RENAME TO audit_log")
        .execute(&db.pool)
        .await
        .unwrap();
    // Nothing was dispensed: the clinic does not see it dispensed, and it still can be.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let seen = flow.clinic_sees("clinic-sakura", &id, "issued").await;
    assert!(seen["dispensed"].is_null(), "{seen}");
    let (status, dispensed) = flow.dispense("pharmacy-aozora", &id, pharmacist()).await;
    assert_eq!(status, 200, "{dispensed}");
    let audit = flow.audit(&id).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(org, action)| org == "pharmacy-aozora" && action == "dispense")
            .count(),
        1
    );
    flow.stop().await;
}

#[tokio::test]
async fn cancels_racing_a_dispense_are_told_the_outcome_is_pending_and_the_view_tells_it() {
    let flow = Flow::start().await;
    let id = flow
        .issue_delivered("clinic-sakura", &numbered_bundle(9020), "pharmacy-aozora")
        .await;
    let cancel = json!({"reason": "誤処方", "cancelled_by": {"id": "doc-1", "name": null, "department": null}});
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = flow
            .http
            .post(format!("{}/clinic/prescriptions/{id}/cancel", flow.gateway))
            .bearer_auth(flow.keys["clinic-sakura"].expose())
            .json(&cancel);
        racing.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        });
    }
    let dispensed = flow.dispense("pharmacy-aozora", &id, pharmacist()).await;
    let cancelled = racing.join_all().await;
    for (status, body) in &cancelled {
        match status {
            202 => {
                assert_eq!(body["status"], "cancellation_requested", "{body}");
                assert_eq!(body["outcome"], "pending", "{body}");
            }
            // Once the view has the first cancellation or the dispensing, it answers at once.
            409 => assert!(
                ["already_dispensed", "not_cancellable"].contains(&body["error"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    // The view settles on one truth and says what became of the request.
    let final_status = if dispensed.0 == 200 {
        "dispensed"
    } else {
        "cancelled"
    };
    let seen = flow.clinic_sees("clinic-sakura", &id, final_status).await;
    if cancelled.iter().any(|(s, _)| *s == 202) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = seen;
        while seen["cancellation"].is_null() {
            assert!(Instant::now() < deadline, "{seen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = flow.clinic_sees("clinic-sakura", &id, final_status).await;
        }
        let expected = if final_status == "dispensed" {
            "too_late"
        } else {
            "cancelled"
        };
        assert_eq!(seen["cancellation"]["outcome"], expected, "{seen}");
    }
    flow.stop().await;
}
