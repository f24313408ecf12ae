//! The adversarial suite: generated requests against the real routers (in process, on a real
//! database and the in-memory broker), each valid one built from the JP e-prescription example
//! and then broken in exactly one way, asserting the precise answer: the status and where the
//! problem is. After every case: nothing was stored for a refused request, and at the end the
//! broker holds exactly one record per accepted one. Memory is checked at the end.
//!
//! `HIXBUS_ADVERSARIAL_CASES` sets the cases per parser (CI: 10,000; `tests/run --long`: more).
//! A failure prints proptest's minimal failing case.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hixbus_access::Directory;
use hixbus_access::codes::CodeKeys;
use hixbus_bus::Publisher;
use hixbus_bus::dev::DevCluster;
use hixbus_contracts::Catalog;
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use hixbus_storage::{AuditLog, Database};
use hixbus_tests::{Backend, TestRegistry};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::prescriptions::fixture;

const EXAMPLE: &str = "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json";
const SINGLE: &str = "MedicationRequest-JP-MedReq-ePreData-Example-naihuku.json";
const CASES: u32 = 10_000;

/// HOT9 codes of real products (in the safety rules' tables or the examples).
const DRUGS: [(&str, &str); 5] = [
    ("103831601", "カルボシステイン錠２５０ｍｇ"),
    ("107602401", "ロキソニン錠６０ｍｇ"),
    ("106238001", "ガスター錠２０ｍｇ"),
    ("111436601", "アムロジピン錠５ｍｇ"),
    ("102094601", "ヒアレイン点眼液０．１％"),
];

/// One way to break a valid request, with what the gateway must answer.
#[derive(Debug, Clone)]
enum Break {
    Nothing,
    RemoveIdentifier,
    IssueDate(i32),
    Quantity(f64),
    RemoveQuantity,
    DaysSupply(f64),
    RemoveDrugCode,
    RemoveDosageText,
    Control(usize, char),
    LongText(usize),
    TooManyLines(usize),
    RepeatEntry(usize),
    SecondPatient,
    ResourceType(String),
    NotJson(Vec<u8>),
    MediaType(String),
    UnknownPharmacy(String),
    RemovePatient,
    TooManyEntries(usize),
    Deep(usize),
}

/// The status and (for a FHIR answer) an expression one of its issues must have.
struct Expect {
    status: u16,
    at: Option<String>,
}

fn expect(status: u16, at: impl Into<Option<String>>) -> Expect {
    Expect {
        status,
        at: at.into(),
    }
}

fn refused_control() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20)
            .prop_filter("tab and line breaks are text", |c| ![9, 10, 13].contains(c))
            .prop_map(|c| char::from_u32(c).unwrap()),
        Just('\u{7f}'),
        (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
        prop_oneof![
            Just('\u{202e}'),
            Just('\u{202d}'),
            Just('\u{2066}'),
            Just('\u{2069}'),
            Just('\u{200f}'),
            Just('\u{061c}')
        ],
    ]
}

fn breaks(single: bool) -> impl Strategy<Value = Break> {
    let bundle_only = prop_oneof![
        (61usize..90).prop_map(Break::TooManyLines),
        (0usize..16).prop_map(Break::RepeatEntry),
        Just(Break::SecondPatient),
        Just(Break::RemovePatient),
        (121usize..400).prop_map(Break::TooManyEntries),
    ];
    let common = prop_oneof![
        4 => Just(Break::Nothing),
        1 => Just(Break::RemoveIdentifier),
        1 => prop_oneof![(1i32..20_000), (-20_000i32..-3)].prop_map(Break::IssueDate),
        1 => prop_oneof![
            Just(0.0f64),
            (-1e9f64..-0.001),
            (100_000.5f64..1e300),
        ]
        .prop_map(Break::Quantity),
        1 => Just(Break::RemoveQuantity),
        1 => prop_oneof![Just(0.0f64), (-1e6f64..-1.0), (366.0f64..1e13), Just(7.5f64)]
            .prop_map(Break::DaysSupply),
        1 => Just(Break::RemoveDrugCode),
        1 => Just(Break::RemoveDosageText),
        2 => (0usize..1000, refused_control()).prop_map(|(i, c)| Break::Control(i, c)),
        1 => (4097usize..20_000).prop_map(Break::LongText),
        1 => "[A-Z][a-z]{2,20}"
            .prop_filter("another resource", |t| t != "Bundle" && t != "MedicationRequest")
            .prop_map(Break::ResourceType),
        1 => proptest::collection::vec(any::<u8>(), 0..200)
            .prop_filter("not JSON", |b| serde_json::from_slice::<Value>(b).is_err())
            .prop_map(Break::NotJson),
        1 => prop_oneof![
            Just("text/plain".to_owned()),
            Just("application/xml".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            "[a-z]{1,10}/[a-z]{1,10}".prop_filter("not JSON", |m| !m.ends_with("json")),
        ]
        .prop_map(Break::MediaType),
        1 => "[a-z-]{1,30}".prop_map(Break::UnknownPharmacy),
        1 => (130usize..400).prop_map(Break::Deep),
    ];
    if single {
        common.boxed()
    } else {
        prop_oneof![8 => common, 1 => bundle_only].boxed()
    }
}

/// A valid prescription, varied where a clinic varies it.
#[derive(Debug, Clone)]
struct Valid {
    lines: usize,
    drug: usize,
    quantity: f64,
    days: Option<u32>,
    dosage: String,
    insured: u32,
    days_before_today: i32,
}

fn valid() -> impl Strategy<Value = Valid> {
    (
        1usize..=6,
        0usize..DRUGS.len(),
        prop_oneof![
            (1u32..=999).prop_map(f64::from),
            (1u32..=200).prop_map(|q| f64::from(q) + 0.5)
        ],
        proptest::option::of(1u32..=90),
        "[一-龥ぁ-んァ-ヶ０-９1-9 、。・]{1,40}",
        10_000u32..99_999_999,
        0i32..=3,
    )
        .prop_map(
            |(lines, drug, quantity, days, dosage, insured, days_before_today)| Valid {
                lines,
                drug,
                quantity,
                days,
                dosage,
                insured,
                days_before_today,
            },
        )
}

fn today_minus(days: i32) -> String {
    hixbus_contracts::lifecycle::today_in_japan()
        .plus_days(-days)
        .to_string()
}

fn line(template: &Value, n: usize, v: &Valid) -> Value {
    let mut entry = template.clone();
    let (code, name) = DRUGS[(v.drug + n) % DRUGS.len()];
    let r = &mut entry["resource"];
    r["id"] = json!(format!("line-{n}"));
    r["medicationCodeableConcept"]["coding"][0]["code"] = json!(code);
    r["medicationCodeableConcept"]["coding"][0]["display"] = json!(name);
    r["dispenseRequest"]["quantity"]["value"] = json!(v.quantity);
    match v.days {
        Some(days) => r["dispenseRequest"]["expectedSupplyDuration"]["value"] = json!(days),
        None => {
            if let Some(request) = r["dispenseRequest"].as_object_mut() {
                request.remove("expectedSupplyDuration");
            }
        }
    }
    r["dosageInstruction"][0]["text"] = json!(v.dosage);
    r["identifier"][0]["value"] = json!(format!("{}", n + 1));
    entry["fullUrl"] = json!(format!("urn:uuid:00000000-0000-4000-8000-{n:012}"));
    entry
}

/// The example Bundle with `v`'s lines, dates, patient and a fresh identifier.
fn bundle(v: &Valid, identifier: &str) -> Value {
    let mut b = fixture(EXAMPLE);
    b["identifier"]["value"] = json!(identifier);
    let date = today_minus(v.days_before_today);
    let entries = b["entry"].as_array_mut().unwrap();
    let template = entries
        .iter()
        .find(|e| e["resource"]["resourceType"] == "MedicationRequest")
        .cloned()
        .unwrap();
    entries.retain(|e| e["resource"]["resourceType"] != "MedicationRequest");
    for entry in entries.iter_mut() {
        let r = &mut entry["resource"];
        if r["resourceType"] == "Composition" {
            r["date"] = json!(date);
        }
        if r["resourceType"] == "Coverage" {
            for ext in r["extension"].as_array_mut().into_iter().flatten() {
                if ext["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("InsuredPersonNumber"))
                {
                    ext["valueString"] = json!(v.insured.to_string());
                }
            }
        }
    }
    for n in 0..v.lines {
        let mut entry = line(&template, n, v);
        entry["resource"]["authoredOn"] = json!(date);
        entries.push(entry);
    }
    b
}

fn single(v: &Valid, identifier: &str) -> Value {
    let mut r = fixture(SINGLE);
    r["identifier"] = json!([{ "system": "urn:example:rx", "value": identifier }]);
    let wrapped = line(&json!({ "resource": r }), 0, v);
    let mut r = wrapped["resource"].clone();
    r["identifier"] = json!([{ "system": "urn:example:rx", "value": identifier }]);
    r["authoredOn"] = json!(today_minus(v.days_before_today));
    r["subject"] = json!({ "reference": format!("Patient/p-{}", v.insured) });
    r
}

/// Every string in `doc` with its expression, in document order.
fn strings(doc: &Value, at: String, out: &mut Vec<String>) {
    match doc {
        Value::String(_) => out.push(at),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                strings(item, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn at_path<'a>(doc: &'a mut Value, path: &str, root: &str) -> &'a mut Value {
    let mut here = doc;
    let rest = path.strip_prefix(root).unwrap_or(path);
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        here = &mut here[key];
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            here = &mut here[index.parse::<usize>().unwrap()];
        }
    }
    here
}

fn requests_of(doc: &mut Value) -> Vec<&mut Value> {
    if doc["resourceType"] == "Bundle" {
        doc["entry"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .filter(|e| e["resource"]["resourceType"] == "MedicationRequest")
            .map(|e| &mut e["resource"])
            .collect()
    } else {
        vec![doc]
    }
}

/// Applies `broken` to `doc`: the body, content type, query, and the expected answer.
fn apply(mut doc: Value, broken: &Break) -> (Vec<u8>, String, String, Expect) {
    let bundle = doc["resourceType"] == "Bundle";
    let root = if bundle {
        "Bundle"
    } else {
        "MedicationRequest"
    };
    let request_at = |doc: &Value| -> String {
        if bundle {
            let i = doc["entry"]
                .as_array()
                .unwrap()
                .iter()
                .position(|e| e["resource"]["resourceType"] == "MedicationRequest")
                .unwrap();
            format!("Bundle.entry[{i}].resource")
        } else {
            "MedicationRequest".to_owned()
        }
    };
    let json_type = "application/fhir+json".to_owned();
    let query = "?target_pharmacy=pharmacy-aozora".to_owned();
    let at = request_at(&doc);
    let expected = match broken {
        Break::Nothing => expect(202, None),
        Break::RemoveIdentifier => {
            if bundle {
                doc.as_object_mut().unwrap().remove("identifier");
                expect(422, "Bundle.identifier".to_owned())
            } else {
                doc.as_object_mut().unwrap().remove("identifier");
                doc.as_object_mut().unwrap().remove("id");
                expect(422, "MedicationRequest.identifier".to_owned())
            }
        }
        Break::IssueDate(offset) => {
            let date = hixbus_contracts::lifecycle::today_in_japan()
                .plus_days(*offset)
                .to_string();
            if bundle {
                for e in doc["entry"].as_array_mut().unwrap() {
                    let r = &mut e["resource"];
                    if r["resourceType"] == "Composition" {
                        r["date"] = json!(date);
                    }
                }
                expect(422, "Composition.date".to_owned())
            } else {
                doc["authoredOn"] = json!(date);
                expect(422, "MedicationRequest.authoredOn".to_owned())
            }
        }
        Break::Quantity(q) => {
            requests_of(&mut doc)[0]["dispenseRequest"]["quantity"]["value"] = json!(q);
            expect(422, format!("{at}.dispenseRequest.quantity.value"))
        }
        Break::RemoveQuantity => {
            requests_of(&mut doc)[0]["dispenseRequest"]
                .as_object_mut()
                .unwrap()
                .remove("quantity");
            expect(422, format!("{at}.dispenseRequest.quantity"))
        }
        Break::DaysSupply(d) => {
            requests_of(&mut doc)[0]["dispenseRequest"]["expectedSupplyDuration"]["value"] =
                json!(d);
            expect(
                422,
                format!("{at}.dispenseRequest.expectedSupplyDuration.value"),
            )
        }
        Break::RemoveDrugCode => {
            requests_of(&mut doc)[0]["medicationCodeableConcept"]["coding"] = json!([]);
            expect(422, format!("{at}.medicationCodeableConcept.coding"))
        }
        Break::RemoveDosageText => {
            let r = &mut requests_of(&mut doc)[0];
            r["dosageInstruction"] = json!([{}]);
            expect(422, format!("{at}.dosageInstruction[0].text"))
        }
        Break::Control(i, c) => {
            let mut all = Vec::new();
            strings(&doc, root.to_owned(), &mut all);
            // The resource type names the root of every location; breaking it is `ResourceType`.
            all.retain(|p| p != &format!("{root}.resourceType"));
            let path = all[i % all.len()].clone();
            let target = at_path(&mut doc, &path, root);
            let text = target.as_str().unwrap_or_default().to_owned();
            let cut = text.chars().count() / 2;
            let broken: String = text
                .chars()
                .take(cut)
                .chain(std::iter::once(*c))
                .chain(text.chars().skip(cut))
                .collect();
            *target = json!(broken);
            expect(422, path)
        }
        Break::LongText(n) => {
            let r = &mut requests_of(&mut doc)[0];
            r["note"] = json!([{ "text": "あ".repeat(*n) }]);
            expect(422, format!("{at}.note[0].text"))
        }
        Break::TooManyLines(n) => {
            let entries = doc["entry"].as_array_mut().unwrap();
            let template = entries
                .iter()
                .find(|e| e["resource"]["resourceType"] == "MedicationRequest")
                .cloned()
                .unwrap();
            for k in 0..*n {
                let mut extra = template.clone();
                extra["fullUrl"] = json!(format!("urn:uuid:extra-{k}"));
                extra["resource"]["id"] = json!(format!("extra-{k}"));
                entries.push(extra);
            }
            expect(422, "Bundle.entry".to_owned())
        }
        Break::RepeatEntry(k) => {
            let entries = doc["entry"].as_array_mut().unwrap();
            let copy = entries[k % entries.len()].clone();
            entries.push(copy);
            expect(422, format!("Bundle.entry[{}]", entries.len() - 1))
        }
        Break::SecondPatient => {
            let entries = doc["entry"].as_array_mut().unwrap();
            let mut patient = entries
                .iter()
                .find(|e| e["resource"]["resourceType"] == "Patient")
                .cloned()
                .unwrap();
            patient["fullUrl"] = json!("urn:uuid:another-patient");
            patient["resource"]["id"] = json!("another-patient");
            entries.push(patient);
            expect(422, "Bundle.entry".to_owned())
        }
        Break::RemovePatient => {
            doc["entry"]
                .as_array_mut()
                .unwrap()
                .retain(|e| e["resource"]["resourceType"] != "Patient");
            expect(422, "Bundle.entry".to_owned())
        }
        Break::TooManyEntries(n) => {
            let entries = doc["entry"].as_array_mut().unwrap();
            for k in 0..*n {
                entries.push(json!({
                    "fullUrl": format!("urn:uuid:note-{k}"),
                    "resource": { "resourceType": "Basic", "id": format!("note-{k}") }
                }));
            }
            expect(422, "Bundle.entry".to_owned())
        }
        Break::ResourceType(t) => {
            doc["resourceType"] = json!(t);
            expect(400, "resourceType".to_owned())
        }
        Break::NotJson(bytes) => {
            return (bytes.clone(), json_type, query, expect(400, "$".to_owned()));
        }
        Break::MediaType(media) => {
            return (
                doc.to_string().into_bytes(),
                media.clone(),
                query,
                expect(415, "Content-Type".to_owned()),
            );
        }
        Break::UnknownPharmacy(p) => {
            return (
                doc.to_string().into_bytes(),
                json_type,
                format!("?target_pharmacy=unknown-{p}"),
                expect(422, "target_pharmacy".to_owned()),
            );
        }
        Break::Deep(depth) => {
            let mut nested = json!("deep");
            for _ in 0..*depth {
                nested = json!([nested]);
            }
            let text = doc.to_string();
            let body = format!("{}, \"extension\": {}}}", &text[..text.len() - 1], nested);
            return (
                body.into_bytes(),
                json_type,
                query,
                expect(400, "$".to_owned()),
            );
        }
    };
    (doc.to_string().into_bytes(), json_type, query, expected)
}

/// The gateway's router on SQLite and the in-memory broker, with a clinic key.
struct Gateway {
    router: Router,
    db: Database,
    key: String,
    kafka: hixbus_bus::KafkaConfig,
    _cluster: DevCluster,
    _registry: TestRegistry,
}

async fn gateway() -> Gateway {
    // Telemetry first, as every hixbus process has it: the runtime's instruments bind to the
    // meter provider there is when first used, for the whole test process.
    hixbus_tests::init_tracing();
    let specs =
        hixbus_bus::topics::specs(hixbus_bus::topics::EMBEDDED, Catalog::embedded()).unwrap();
    let cluster = DevCluster::start(None, &specs).await.unwrap();
    let kafka = hixbus_bus::KafkaConfig::new(cluster.bootstrap_servers());
    let registry = TestRegistry::fresh(Backend::Sqlite).await;
    let codec = Arc::new(Codec::new(
        registry.client.clone(),
        SchemaIdStrategy::Register,
    ));
    let mut directory = Directory::from_toml(
        "[[organization]]\nid = \"clinic-sakura\"\nrole = \"clinic\"\nname = \"c\"\n\n[[organization]]\nid = \"pharmacy-aozora\"\nrole = \"pharmacy\"\nname = \"p\"\n",
    )
    .unwrap();
    let key = directory
        .issue_key("clinic-sakura")
        .unwrap()
        .expose()
        .to_owned();
    let db = Database::connect(&hixbus_tests::fresh_database(Backend::Sqlite).await)
        .await
        .unwrap();
    let state = hixbus_clinic_gateway::routes::AppState {
        directory: Arc::new(directory),
        publisher: Publisher::new(&kafka, codec).unwrap(),
        submissions: hixbus_clinic_gateway::store::Submissions::new(db.clone())
            .await
            .unwrap(),
        view: hixbus_clinic_gateway::view::ClinicView::new(db.clone())
            .await
            .unwrap(),
        audit: AuditLog::new(db.clone()).await.unwrap(),
        codes: Arc::new(CodeKeys::ephemeral()),
        links: hixbus_storage::Links::new(db.clone()).await.unwrap(),
        inbox: {
            let results = hixbus_clinic_gateway::results::Results::new(db.clone())
                .await
                .unwrap();
            hixbus_clinic_gateway::results_api::Inbox {
                changes: hixbus_service::changes::Changes::local(
                    results.clone(),
                    hixbus_service::CancellationToken::new(),
                ),
                results,
                streams: hixbus_service::PerKeyLimit::new(1),
            }
        },
    };
    Gateway {
        router: hixbus_clinic_gateway::startup::app(state),
        db,
        key,
        kafka,
        _cluster: cluster,
        _registry: registry,
    }
}

async fn submissions(db: &Database) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM gateway_submissions")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Records on `topic`, from the partitions' watermarks.
fn records_on(kafka: &hixbus_bus::KafkaConfig, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", "hixbus-adversarial-probe")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), std::time::Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .sum()
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs `cases` generated requests of one kind (`single`: a lone MedicationRequest) through
/// the gateway.
fn run_gateway_suite(name: &str, single_resource: bool) {
    hixbus_tests::watch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = runtime.block_on(gateway());
    let rss_before = rss_mib();
    let cases = hixbus_tests::cases(CASES);
    let accepted = std::cell::Cell::new(0i64);
    let tried = std::cell::Cell::new(0u32);
    let by_status = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let path = if single_resource {
        "/fhir/MedicationRequest"
    } else {
        "/fhir/Bundle"
    };
    let result = runner.run(
        &(valid(), breaks(single_resource), any::<u64>()),
        |(v, broken, id)| {
            tried.set(tried.get() + 1);
            let identifier = format!("urn:uuid:adversarial-{id:016x}-{}", tried.get());
            let doc = if single_resource {
                single(&v, &identifier)
            } else {
                bundle(&v, &identifier)
            };
            let (body, media, query, expected) = apply(doc, &broken);
            let (status, answer, stored_before, stored_after) = runtime.block_on(async {
                let before = submissions(&gw.db).await;
                let request = Request::post(format!("{path}{query}"))
                    .header("authorization", format!("Bearer {}", gw.key))
                    .header("content-type", media)
                    .body(Body::from(body))
                    .unwrap();
                let response = gw.router.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (status, answer, before, submissions(&gw.db).await)
            });
            *by_status.borrow_mut().entry(status).or_default() += 1;
            prop_assert_eq!(status, expected.status, "{:?}: {}", broken, answer);
            if status == 202 {
                accepted.set(accepted.get() + 1);
                prop_assert_eq!(stored_after, stored_before + 1);
            } else {
                prop_assert_eq!(
                    stored_after,
                    stored_before,
                    "a refused request stored nothing"
                );
                prop_assert_eq!(&answer["resourceType"], "OperationOutcome", "{}", answer);
            }
            if let Some(at) = &expected.at {
                let places: Vec<&str> = answer["issue"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["expression"][0].as_str())
                    .collect();
                prop_assert!(
                    places.contains(&at.as_str()),
                    "{:?}: expected a problem at {}, got {:?}",
                    broken,
                    at,
                    places
                );
            }
            Ok::<(), TestCaseError>(())
        },
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let by_status = by_status.into_inner();
    let published = records_on(&gw.kafka, "prescriptions");
    assert_eq!(
        published,
        accepted.get(),
        "the broker holds one record per accepted request, none for a refused one"
    );
    let still_answers = runtime.block_on(async {
        let response = gw
            .router
            .clone()
            .oneshot(
                Request::get("/clinic/prescriptions?limit=1")
                    .header("authorization", format!("Bearer {}", gw.key))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        response.status().as_u16()
    });
    assert_eq!(still_answers, 200);
    // Other tests share this process, so its memory is recorded, not asserted; the bound is
    // asserted on `hixbus up` under the hostile corpus (tests/smoke/up.sh).
    let grown = rss_mib() - rss_before;
    hixbus_tests::report(
        name,
        json!({
            "cases": tried.get(),
            "accepted": accepted.get(),
            "by_status": by_status,
            "published": published,
            "rss_growth_mib": (grown * 10.0).round() / 10.0,
        }),
    );
}

#[test]
fn generated_prescription_bundles_get_the_precise_answer_and_refused_ones_leave_nothing() {
    run_gateway_suite("adversarial: FHIR Bundle", false);
}

#[test]
fn generated_medication_requests_get_the_precise_answer_and_refused_ones_leave_nothing() {
    run_gateway_suite("adversarial: FHIR MedicationRequest", true);
}

/// The hostile corpus against the services on a real broker and PostgreSQL: every answer as
/// expected (with a JSON body), nothing stored or published, the services still serving.
#[tokio::test]
async fn hostile_requests_get_their_answer_and_leave_nothing_behind() {
    use crate::prescriptions::{Flow, numbered_bundle};
    let flow = Flow::start().await;
    let foreign = flow
        .issue_delivered(
            "hospital-daiichi",
            &numbered_bundle(7001),
            "pharmacy-midori",
        )
        .await;
    let target = hixbus_tests::hostile::Target {
        gateway: flow.gateway.clone(),
        pharmacy: flow.pharmacy.clone(),
        registry: None,
        clinic_key: flow.keys["clinic-sakura"].expose().to_owned(),
        pharmacy_key: flow.keys["pharmacy-aozora"].expose().to_owned(),
        other_pharmacy_key: flow.keys["pharmacy-midori"].expose().to_owned(),
        foreign_prescription: Some(foreign),
    };
    let count = |url: String, table: &'static str| async move {
        let db = Database::connect(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        n
    };
    let before = (
        count(flow.gateway_db.clone(), "gateway_submissions").await,
        count(flow.pharmacy_db.clone(), "pharmacy_prescriptions").await,
        records_on(&flow.stack.kafka, "prescriptions"),
        records_on(&flow.stack.kafka, "dispensations"),
    );
    let cases = hixbus_tests::hostile::corpus(&target);
    let rounds = 3;
    let (mut requests, mut shed) = (0, 0);
    for _ in 0..rounds {
        let outcome = hixbus_tests::hostile::run(&cases, 16).await;
        assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
        requests += outcome.requests;
        shed += outcome.shed;
    }
    let after = (
        count(flow.gateway_db.clone(), "gateway_submissions").await,
        count(flow.pharmacy_db.clone(), "pharmacy_prescriptions").await,
        records_on(&flow.stack.kafka, "prescriptions"),
        records_on(&flow.stack.kafka, "dispensations"),
    );
    assert_eq!(before, after, "nothing stored, nothing published");
    for url in [&flow.gateway, &flow.pharmacy] {
        let health = reqwest::get(format!("{url}/health")).await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
    }
    hixbus_tests::report(
        "hostile corpus (services on Tansu and PostgreSQL)",
        json!({ "kinds": cases.len(), "requests": requests, "shed": shed, "unexpected": 0 }),
    );
    flow.stop().await;
}
