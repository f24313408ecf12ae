//! Claims end to end on a real broker: the JP e-prescription examples issued and dispensed
//! (one with a generic substitution) become claims priced from the tables, which reach the
//! insurer the Coverage names — on its own topic and its feed, cut to the allow-list — and are
//! decided by the reference insurer, the decision flowing back to the pharmacy. A claim that
//! does not match its prescription (突合) is returned with the reason; another insurer sees
//! nothing of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_access::Directory;
use hixbus_bus::reader::{Start, TopicReader};
use hixbus_contracts::{Event, insurer_topic};
use hixbus_tests::{
    Backend, BusStack, DEMO_ORGANIZATIONS, Service, directory_with_keys, fresh_database,
    start_service, start_service_with,
};
use serde_json::{Value, json};

use crate::prescriptions::{fixture, pharmacist};

const ROSTER: &str = include_str!("../../infra/insurers/insurer-kenpo.roster.csv");
const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
const FEES: &str = "urn:hixbus:dispensing-fee";
const PATIENT: &str = "jp-insured:06123456:12345:67890:01";
/// 21 tablets of the examples' first drug, and the basic dispensing fee, as a claim bills them.
const CARBOCISTEINE: Item<'static> = (
    HOT9,
    "103831601",
    "カルボシステイン錠２５０ｍｇ",
    21.0,
    "錠",
    210,
);
const BASIC: Item<'static> = (FEES, "dispensing-basic-1", "調剤基本料１", 1.0, "回", 450);

struct Flow {
    services: Vec<Service>,
    stack: BusStack,
    directory: Arc<Directory>,
    gateway: String,
    pharmacy: String,
    claims: String,
    feed: String,
    insurer: String,
    keys: HashMap<String, String>,
    http: reqwest::Client,
    /// The databases, by service.
    databases: HashMap<Kind, String>,
    _roster: tempfile::NamedTempFile,
}

impl Flow {
    async fn start() -> Self {
        let stack = BusStack::start().await;
        let (directory, keys) = directory_with_keys(DEMO_ORGANIZATIONS);
        let roster = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        std::fs::write(roster.path(), ROSTER).unwrap();
        let roster_path = roster.path().display().to_string();
        let mut services = Vec::new();
        let mut databases = HashMap::new();
        let mut start = async |kind, backend, settings: &[(&str, &str)]| {
            let db = fresh_database(backend).await;
            let (url, service) =
                start_service_with(kind, &stack, &directory, Some(&db), settings).await;
            services.push(service);
            databases.insert(kind, db);
            url
        };
        let gateway = start(Kind::ClinicGateway, Backend::Sqlite, &[]).await;
        let pharmacy = start(Kind::Pharmacy, Backend::Sqlite, &[]).await;
        let claims = start(Kind::Claims, Backend::Postgres, &[]).await;
        let feed = start(
            Kind::InsurerFeed,
            Backend::Postgres,
            &[("evidence_wait_secs", "2")],
        )
        .await;
        let insurer = start(
            Kind::Insurer,
            Backend::Postgres,
            &[("insurer", "insurer-kenpo"), ("roster", &roster_path)],
        )
        .await;
        Self {
            services,
            stack,
            directory,
            gateway,
            pharmacy,
            claims,
            feed,
            insurer,
            keys,
            http: reqwest::Client::new(),
            databases,
            _roster: roster,
        }
    }

    /// (subject, patient) of each audit entry of `action` by `org` in `kind`'s database.
    async fn audited(&self, kind: Kind, org: &str, action: &str) -> Vec<(String, String)> {
        let db = hixbus_storage::Database::connect(&self.databases[&kind])
            .await
            .unwrap();
        sqlx::query_as(
            "SELECT subject_id, patient_ref FROM audit_log WHERE org_id = $1 AND action = $2",
        )
        .bind(org)
        .bind(action)
        .fetch_all(&db.pool)
        .await
        .unwrap()
    }

    async fn call(
        &self,
        org: &str,
        method: &str,
        url: String,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.keys[org])
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Issues `bundle` from `issuer` to pharmacy-aozora; the prescription id once the pharmacy
    /// has it.
    async fn issue(&self, issuer: &str, bundle: &Value) -> String {
        let (status, accepted) = self
            .call(
                issuer,
                "POST",
                format!(
                    "{}/fhir/Bundle?target_pharmacy=pharmacy-aozora",
                    self.gateway
                ),
                Some(bundle),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["prescription_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .call(
                    "pharmacy-aozora",
                    "GET",
                    format!("{}/pharmacy/prescriptions/{id}", self.pharmacy),
                    None,
                )
                .await;
            if status == 200 {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached the pharmacy: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn dispense(&self, id: &str, body: Value) {
        let (status, answer) = self
            .call(
                "pharmacy-aozora",
                "POST",
                format!("{}/pharmacy/prescriptions/{id}/dispense", self.pharmacy),
                Some(&body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Waits until `provider` sees a decision on version `version` of `claim_id`; that version.
    async fn decided(&self, provider: &str, claim_id: &str, version: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self
                .call(
                    provider,
                    "GET",
                    format!("{}/claims/{claim_id}", self.claims),
                    None,
                )
                .await;
            if status == 200
                && let Some(v) = body["versions"].get(version - 1)
                && !v["decision"].is_null()
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no decision on {claim_id} v{version} for {provider}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn submit(&self, provider: &str, claim: &Value) -> (u16, Value) {
        self.call(
            provider,
            "POST",
            format!("{}/fhir/Claim", self.claims),
            Some(claim),
        )
        .await
    }

    async fn feed(&self, insurer: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                insurer,
                "GET",
                format!("{}/insurer/feed?limit=500", self.feed),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["entries"].as_array().unwrap().clone()
    }

    /// Every event on `insurer`'s own topic once `ready` holds of them (read again until it
    /// does, for at most 30 s).
    async fn topic_when(&self, insurer: &str, ready: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.topic(insurer).await;
            if ready(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "{insurer}'s topic: {events:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every decision on `claim-adjudications`, after a moment for late ones.
    async fn decisions(&self) -> Vec<hixbus_contracts::ClaimAdjudicated> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let reader = TopicReader::open(&self.stack.kafka, "claim-adjudications", Start::Beginning)
            .unwrap()
            .with_idle_timeout(Duration::from_secs(3));
        let codec = self.stack.codec();
        let mut decisions = Vec::new();
        for record in reader.read_to_end().await.unwrap() {
            let payload = record.payload.unwrap();
            if let Event::ClaimAdjudicated(d) = codec.decode(&payload).await.unwrap().unwrap().event
            {
                decisions.push(d);
            }
        }
        decisions
    }

    /// Every event on `insurer`'s own topic, decoded.
    async fn topic(&self, insurer: &str) -> Vec<Event> {
        let reader =
            TopicReader::open(&self.stack.kafka, &insurer_topic(insurer), Start::Beginning)
                .unwrap()
                .with_idle_timeout(Duration::from_secs(3));
        let codec = self.stack.codec();
        let mut events = Vec::new();
        for record in reader.read_to_end().await.unwrap() {
            let payload = record.payload.unwrap();
            events.push(codec.decode(&payload).await.unwrap().unwrap().event);
        }
        events
    }

    async fn stop(self) {
        for service in self.services {
            service.stop().await;
        }
    }
}

/// A bundle as issued today by someone else than the fixture's issuer: a new prescription.
fn bundle(name: &str, identifier: &str) -> Value {
    let mut b = fixture(name);
    b["identifier"]["value"] = json!(identifier);
    b
}

/// A pharmacy's FHIR Claim for `prescription`, billing `items`.
fn pharmacy_claim(identifier: &str, prescription: &str, items: &[Item<'_>]) -> Value {
    fhir_claim("pharmacy", identifier, Some(prescription), items)
}

/// (system, code, name, quantity, unit, yen) of a claim item.
pub(crate) type Item<'a> = (&'a str, &'a str, &'a str, f64, &'a str, i64);

/// A FHIR Claim of `kind` (claim-type) for the e-prescription examples' patient.
pub(crate) fn fhir_claim(
    kind: &str,
    identifier: &str,
    prescription: Option<&str>,
    items: &[Item<'_>],
) -> Value {
    let today = chrono::Utc::now().date_naive().to_string();
    let total: i64 = items.iter().map(|i| i.5).sum();
    json!({
        "resourceType": "Claim",
        "identifier": [{"system": "urn:hixbus-test:claims", "value": identifier}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": kind}]},
        "use": "claim",
        "patient": {"reference": "#patient"},
        "billablePeriod": {"start": today, "end": today},
        "created": today,
        "provider": {"identifier": {"value": "1340000007"}},
        "priority": {"coding": [{"code": "normal"}]},
        "prescription": prescription.map(|p| json!({"identifier": {"value": p}})),
        "contained": [
            {"resourceType": "Patient", "id": "patient", "birthDate": "1920-02-11"},
            {"resourceType": "Organization", "id": "payer",
             "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.61", "value": "06123456"}]},
            {"resourceType": "Coverage", "id": "coverage", "status": "active",
             "beneficiary": {"reference": "#patient"}, "payor": [{"reference": "#payer"}],
             "costToBeneficiary": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-copay-type", "code": "copaypct"}]}, "valueQuantity": {"value": 30}}],
             "extension": [
                {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSymbol", "valueString": "12345"},
                {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonNumber", "valueString": "67890"},
                {"url": "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_InsuredPersonSubNumber", "valueString": "01"}
             ]}
        ],
        "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "#coverage"}}],
        "item": items.iter().enumerate().map(|(n, (system, code, name, quantity, unit, yen))| json!({
            "sequence": n + 1,
            "productOrService": {"coding": [{"system": system, "code": code, "display": name}]},
            "quantity": {"value": quantity, "unit": unit},
            "net": {"value": yen, "currency": "JPY"},
        })).collect::<Vec<_>>(),
        "total": {"value": total, "currency": "JPY"},
    })
}

/// (code, yen) of each line of a decided claim version, in order.
fn lines(version: &Value) -> Vec<(String, i64)> {
    version["claim"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["service"]["code"].as_str().unwrap().to_owned(),
                l["amount_jpy"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn reasons(version: &Value) -> Vec<String> {
    version["decision"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn dispensings_become_priced_claims_the_named_insurer_decides_and_the_pharmacy_sees() {
    let flow = Flow::start().await;
    let substituted = flow
        .issue(
            "hospital-daiichi",
            &bundle(
                "Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json",
                "claims-rx-1",
            ),
        )
        .await;
    let as_prescribed = flow
        .issue(
            "clinic-sakura",
            &bundle(
                "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json",
                "claims-rx-2",
            ),
        )
        .await;
    // Line 2 (リンデロンＶＧ, 変更可) handed over as a generic.
    let mut body = pharmacist();
    body["lines"] = json!([
        {"line_no": 1},
        {"line_no": 2, "substitute": {"system": HOT9, "code": "106062102", "display": "デキサンＶＧクリーム０．１２％「デモ」　５ｇ"}, "reason": "後発医薬品への変更"}
    ]);
    flow.dispense(&substituted, body).await;
    flow.dispense(&as_prescribed, pharmacist()).await;

    // The amounts, by hand (docs/claims.md): one point is 10 yen; a drug's unit of account
    // costs 1 point up to 15 yen and 1 more per 10 yen or part beyond.
    //   カルボシステイン 21 錠 for 7 days: 3 錠 × 10.10 = 30.30 yen a day → 3 points × 7 = 210
    //   デキサンＶＧ (generic) 2 本 × 55.00 = 110.00 yen → 11 points = 110
    //   チモプトール 2 本 × 1,231.50 = 2,463.00 yen → 246 points = 2,460
    //   fees: 調剤基本料1 450, 薬剤調製料 内服 240, 調剤管理料 7日 40, 薬剤調製料 外用 100,
    //         服薬管理指導料2 590
    // The patient's 30 % is rounded to 10 yen; the public programme of the example ended in
    // 2020, so it pays nothing today.
    let expected = [
        (
            &substituted,
            vec![
                ("103831601", 210),
                ("106062102", 110),
                ("dispensing-basic-1", 450),
                ("preparation-internal", 240),
                ("management-7", 40),
                ("preparation-external", 100),
                ("medication-guidance-2", 590),
            ],
            1740,
            520,
            1220,
        ),
        (
            &as_prescribed,
            vec![
                ("103831601", 210),
                ("102094601", 2460),
                ("dispensing-basic-1", 450),
                ("preparation-internal", 240),
                ("management-7", 40),
                ("preparation-external", 100),
                ("medication-guidance-2", 590),
            ],
            4090,
            1230,
            2860,
        ),
    ];
    for (rx, want_lines, total, patient, insurer) in expected {
        let claim_id = format!("dispensing:{rx}");
        let v = flow.decided("pharmacy-aozora", &claim_id, 1).await;
        let want: Vec<(String, i64)> = want_lines
            .iter()
            .map(|(c, y)| ((*c).to_owned(), *y))
            .collect();
        assert_eq!(lines(&v), want, "{v}");
        assert_eq!(v["claim"]["total_jpy"], total, "{v}");
        assert_eq!(v["claim"]["patient_jpy"], patient, "{v}");
        assert_eq!(v["claim"]["insurer_jpy"], insurer, "{v}");
        assert_eq!(v["insurer"], "insurer-kenpo");
        assert_eq!(v["status"], "accepted", "{v}");
        assert_eq!(v["decision"]["paid_jpy"], insurer, "{v}");
        assert_eq!(v["patient_ref"], PATIENT);
    }

    // The named insurer received both claims and the evidence, on its topic and in its feed;
    // the other insurer nothing.
    let claim_count = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::ClaimSubmitted(_)))
            .count()
    };
    let kenpo = flow
        .topic_when("insurer-kenpo", |events| claim_count(events) >= 2)
        .await;
    let claims: BTreeSet<&str> = kenpo
        .iter()
        .filter_map(|e| match e {
            Event::ClaimSubmitted(c) => Some(c.claim_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        claims,
        BTreeSet::from([
            format!("dispensing:{substituted}").as_str(),
            format!("dispensing:{as_prescribed}").as_str()
        ])
    );
    assert!(
        kenpo
            .iter()
            .filter(|e| matches!(e, Event::ClaimEvidence(_)))
            .count()
            >= 4
    );
    let feed = flow.feed("insurer-kenpo").await;
    assert_eq!(feed.iter().filter(|e| e["kind"] == "claim").count(), 2);
    assert!(flow.topic("insurer-kokuho").await.is_empty());
    assert!(flow.feed("insurer-kokuho").await.is_empty());
    // Every delivery to the insurer's topic was audited, with its patient.
    let delivered = flow
        .audited(Kind::InsurerFeed, "insurer-kenpo", "insurer.topic")
        .await;
    for claim in &claims {
        assert!(
            delivered.contains(&((*claim).to_owned(), PATIENT.to_owned())),
            "{claim} delivered unaudited: {delivered:?}"
        );
    }
    // And the pharmacy's reads of its claims.
    let read = flow
        .audited(Kind::Claims, "pharmacy-aozora", "claims.read")
        .await;
    assert!(
        read.iter()
            .any(|(claim, _)| claims.contains(claim.as_str()))
    );

    // Purpose limitation: nothing outside the allow-list reaches the insurer.
    for event in &kenpo {
        let value = serde_json::to_value(event).unwrap();
        check_allowed(event.name(), &value);
    }
    for entry in &feed {
        let kind = entry["kind"].as_str().unwrap();
        let name = match kind {
            "claim" => "ClaimSubmitted",
            "evidence" => "ClaimEvidence",
            other => panic!("unexpected feed entry kind {other}"),
        };
        check_allowed(name, &entry[kind]);
    }

    // Exactly once: the first claim delivered again (the same event, as a redelivery or a
    // replay puts it on the topic) yields no second decision.
    let first = kenpo
        .iter()
        .find_map(|e| match e {
            Event::ClaimSubmitted(c) if c.claim_id == format!("dispensing:{substituted}") => {
                Some(c.clone())
            }
            _ => None,
        })
        .unwrap();
    let publisher = hixbus_bus::Publisher::new(&flow.stack.kafka, flow.stack.codec()).unwrap();
    publisher.publish(&first).await.unwrap();
    flow.topic_when("insurer-kenpo", |events| claim_count(events) >= 3)
        .await;
    let decisions = flow.decisions().await;
    // The same decision may be sent again (same event id: consumers take it once); never a
    // different one.
    let on_first: BTreeSet<(&str, String)> = decisions
        .iter()
        .filter(|d| d.claim_event_id.as_deref() == Some(first.envelope.event_id.as_str()))
        .map(|d| (d.envelope.event_id.as_str(), format!("{:?}", d.outcome)))
        .collect();
    assert_eq!(on_first.len(), 1, "{on_first:?}");
    let v = flow
        .decided("pharmacy-aozora", &format!("dispensing:{substituted}"), 1)
        .await;
    assert_eq!(v["status"], "accepted");

    // A provider sees only its own claims.
    let (status, other) = flow
        .call(
            "pharmacy-midori",
            "GET",
            format!("{}/claims/dispensing:{substituted}", flow.claims),
            None,
        )
        .await;
    assert_eq!(status, 404, "{other}");
    let (status, _) = flow
        .call(
            "insurer-kenpo",
            "GET",
            format!("{}/claims", flow.claims),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let _ = &flow.directory;
    flow.stop().await;
}

/// Every leaf path of `value` that carries something (arrays as `[]`; nulls carry nothing).
fn paths(value: &Value, at: String, out: &mut BTreeSet<String>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                let next = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                paths(v, next, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                paths(v, format!("{at}[]"), out);
            }
        }
        _ => {
            out.insert(at);
        }
    }
}

/// What an insurer may receive of each kind of event: what paying a claim and checking it
/// against its prescription needs. No dosage text, instructions, notes, alerts or results.
fn check_allowed(event: &str, value: &Value) {
    const ENVELOPE: &[&str] = &[
        "envelope.event_id",
        "envelope.occurred_at",
        "envelope.producer_org",
        "envelope.patient_ref",
        "envelope.correlation_id",
        "envelope.causation_id",
    ];
    const INSTITUTION: &[&str] = &["org_id", "institution_code", "name"];
    const CODED: &[&str] = &["system", "code", "display"];
    const COVERAGE: &[&str] = &[
        "coverage.insurer_number",
        "coverage.insurer_org",
        "coverage.symbol",
        "coverage.number",
        "coverage.branch",
        "coverage.copay_percent",
        "coverage.birth_date",
        "coverage.public_programs[].payer_number",
        "coverage.public_programs[].recipient_number",
        "coverage.public_programs[].copay_percent",
        "coverage.public_programs[].valid_from",
        "coverage.public_programs[].valid_to",
    ];
    let mut allowed: BTreeSet<String> = ENVELOPE.iter().map(|s| (*s).to_owned()).collect();
    allowed.insert("event_type".to_owned());
    let with = |allowed: &mut BTreeSet<String>, prefix: &str, fields: &[&str]| {
        for f in fields {
            allowed.insert(format!("{prefix}.{f}"));
        }
    };
    match event {
        "ClaimSubmitted" => {
            for f in [
                "claim_id",
                "insurer_org",
                "member_id",
                "service_start",
                "service_end",
                "total_amount_jpy",
                "patient_copay_jpy",
                "claim_type",
                "version",
                "replaces_event_id",
                "prescription_id",
                "prescription_issuer_org",
                "insurer_share_jpy",
                "public_expense_jpy",
                "tariff",
                "lines[].line_no",
                "lines[].quantity",
                "lines[].unit_price_jpy",
                "lines[].amount_jpy",
                "lines[].line_type",
                "lines[].prescription_line_no",
                "lines[].unit",
            ] {
                allowed.insert(f.to_owned());
            }
            with(&mut allowed, "provider", INSTITUTION);
            with(&mut allowed, "diagnoses[]", CODED);
            with(&mut allowed, "lines[].service", CODED);
            allowed.extend(COVERAGE.iter().map(|s| (*s).to_owned()));
        }
        "ClaimEvidence" => {
            for f in ["prescription_id", "insurer_org", "stage", "issued_on"] {
                allowed.insert(f.to_owned());
            }
            with(&mut allowed, "issuer", INSTITUTION);
            with(&mut allowed, "pharmacy", INSTITUTION);
            for list in ["prescribed[]", "dispensed[]"] {
                with(
                    &mut allowed,
                    list,
                    &["line_no", "quantity", "unit", "days_supply", "substituted"],
                );
                with(&mut allowed, &format!("{list}.drug"), CODED);
            }
        }
        other => panic!("{other} on an insurer's topic"),
    }
    let mut found = BTreeSet::new();
    paths(value, String::new(), &mut found);
    let outside: Vec<&String> = found.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "{event} carries {outside:?} to the insurer"
    );
}

#[tokio::test]
async fn claims_that_do_not_match_their_prescription_are_returned_with_the_reason() {
    let flow = Flow::start().await;
    // Dispensed with more than prescribed (allowed at the counter with a reason), so its claim
    // bills 42 錠 of a prescribed 21.
    let over = flow
        .issue(
            "hospital-daiichi",
            &bundle(
                "Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json",
                "claims-over",
            ),
        )
        .await;
    let mut body = pharmacist();
    body["lines"] = json!([
        {"line_no": 1, "quantity": {"value": 42.0, "unit": "錠"}, "reason": "規格変更のため"},
        {"line_no": 2}
    ]);
    flow.dispense(&over, body).await;
    // Issued, never dispensed.
    let undispensed = flow
        .issue(
            "clinic-sakura",
            &bundle(
                "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json",
                "claims-undispensed",
            ),
        )
        .await;

    let (status, sent) = flow
        .submit(
            "pharmacy-aozora",
            &pharmacy_claim(
                "c-nowhere",
                "rx-that-was-never-issued",
                &[CARBOCISTEINE, BASIC],
            ),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let (status, sent) = flow
        .submit(
            "pharmacy-aozora",
            &pharmacy_claim("c-undispensed", &undispensed, &[CARBOCISTEINE, BASIC]),
        )
        .await;
    assert_eq!(status, 201, "{sent}");

    let nowhere = flow.decided("pharmacy-aozora", "c-nowhere", 1).await;
    assert_eq!(nowhere["status"], "returned", "{nowhere}");
    assert_eq!(reasons(&nowhere), ["no-prescription"]);
    let words = nowhere["decision"]["reasons"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(words.contains("rx-that-was-never-issued"), "{words}");

    let never = flow.decided("pharmacy-aozora", "c-undispensed", 1).await;
    assert_eq!(never["status"], "returned", "{never}");
    assert_eq!(reasons(&never), ["not-dispensed"]);

    let over_claim = format!("dispensing:{over}");
    let too_much = flow.decided("pharmacy-aozora", &over_claim, 1).await;
    assert_eq!(too_much["status"], "returned", "{too_much}");
    assert_eq!(reasons(&too_much), ["over-quantity"]);
    let words = too_much["decision"]["reasons"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(words.contains("42") && words.contains("21"), "{words}");

    // The pharmacy corrects the returned claim: its next version, linked to the first, is
    // accepted. Sending the same correction again changes nothing.
    let corrected = pharmacy_claim(
        &over_claim,
        &over,
        &[
            CARBOCISTEINE,
            (
                HOT9,
                "106062101",
                "リンデロンＶＧクリーム０．１２％　５ｇ",
                2.0,
                "本",
                280,
            ),
            BASIC,
            (
                FEES,
                "preparation-internal",
                "薬剤調製料（内服薬）",
                1.0,
                "回",
                240,
            ),
            (
                FEES,
                "management-7",
                "調剤管理料（内服薬・７日分以下）",
                1.0,
                "回",
                40,
            ),
            (
                FEES,
                "preparation-external",
                "薬剤調製料（外用薬）",
                1.0,
                "回",
                100,
            ),
            (
                FEES,
                "medication-guidance-2",
                "服薬管理指導料２",
                1.0,
                "回",
                590,
            ),
        ],
    );
    let (status, v2) = flow.submit("pharmacy-aozora", &corrected).await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["version"], 2);
    let (status, again) = flow.submit("pharmacy-aozora", &corrected).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    let accepted = flow.decided("pharmacy-aozora", &over_claim, 2).await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    // 210 + 280 + 1,420 = 1,910; the patient's 30 % is 573 → 570; the insurer pays 1,340.
    assert_eq!(accepted["decision"]["paid_jpy"], 1340, "{accepted}");

    // A decided claim is not sent again as a new version.
    let mut changed = corrected.clone();
    changed["item"][0]["quantity"]["value"] = json!(20.0);
    let (status, refused) = flow.submit("pharmacy-aozora", &changed).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["resourceType"], "OperationOutcome");

    // A hospital's visit claim: accepted, the insurer paying its 70 %; sent again by another
    // identifier, the same services are a duplicate.
    let visit = [
        (
            "urn:oid:1.2.392.100495.20.2.71",
            "111000110",
            "初診料",
            1.0,
            "回",
            2910,
        ),
        (
            "urn:oid:1.2.392.100495.20.2.71",
            "160000410",
            "HbA1c",
            1.0,
            "回",
            490,
        ),
    ];
    let (status, sent) = flow
        .submit(
            "hospital-daiichi",
            &fhir_claim("professional", "visit-1", None, &visit),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["claim"]["insurer_jpy"], 2380, "{sent}");
    let accepted = flow.decided("hospital-daiichi", "visit-1", 1).await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["decision"]["paid_jpy"], 2380);
    let (status, _) = flow
        .submit(
            "hospital-daiichi",
            &fhir_claim("professional", "visit-1-again", None, &visit),
        )
        .await;
    assert_eq!(status, 201);
    let twice = flow.decided("hospital-daiichi", "visit-1-again", 1).await;
    assert_eq!(twice["status"], "returned", "{twice}");
    assert_eq!(reasons(&twice), ["duplicate"]);

    // The other insurer saw none of it.
    assert!(flow.topic("insurer-kokuho").await.is_empty());
    assert!(flow.feed("insurer-kokuho").await.is_empty());
    flow.stop().await;
}

#[tokio::test]
async fn bad_claims_get_an_operation_outcome_and_nothing_is_billed() {
    let stack = BusStack::start().await;
    let (directory, keys) = directory_with_keys(DEMO_ORGANIZATIONS);
    let db = fresh_database(Backend::Sqlite).await;
    let (url, service) = start_service(Kind::Claims, &stack, &directory, Some(&db)).await;
    let http = reqwest::Client::new();
    let send = async |org: &str, body: String, media: &str| {
        let answer = http
            .post(format!("{url}/fhir/Claim"))
            .bearer_auth(&keys[org])
            .header("content-type", media)
            .body(body)
            .send()
            .await
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let good = pharmacy_claim("c-1", "rx-1", &[(HOT9, "103831601", "x", 21.0, "錠", 210)]);
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            {
                let mut c = good.clone();
                c["total"]["value"] = json!(999);
                c
            },
            422,
            "Claim.total",
        ),
        (
            {
                let mut c = good.clone();
                c["identifier"] = json!([]);
                c
            },
            422,
            "Claim.identifier",
        ),
        (
            {
                let mut c = good.clone();
                c["item"] = json!([]);
                c
            },
            422,
            "Claim.item",
        ),
        (
            {
                let mut c = good.clone();
                c["item"][0]["net"]["value"] = json!(-5);
                c
            },
            422,
            "Claim.item[0].net.value",
        ),
        (
            {
                let mut c = good.clone();
                c["item"][0]["net"]["currency"] = json!("USD");
                c
            },
            422,
            "Claim.item[0].net.currency",
        ),
        (
            {
                let mut c = good.clone();
                c["insurance"] = json!([]);
                c
            },
            422,
            "Claim.insurance",
        ),
        (
            {
                let mut c = good.clone();
                c["billablePeriod"] = json!({"start": "2099-01-01"});
                c
            },
            422,
            "Claim.billablePeriod",
        ),
        (
            {
                let mut c = good.clone();
                c["prescription"] = Value::Null;
                c
            },
            422,
            "Claim.prescription",
        ),
        (
            {
                let mut c = good.clone();
                c["item"] = json!(vec![c["item"][0].clone(); 501]);
                c
            },
            422,
            "Claim.item",
        ),
        (json!({"resourceType": "Patient"}), 400, "resourceType"),
    ];
    for (body, status, at) in cases {
        let (got, outcome) =
            send("pharmacy-aozora", body.to_string(), "application/fhir+json").await;
        assert_eq!(got, status, "{at}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
        let places: Vec<&str> = outcome["issue"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| {
                i["expression"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap())
            })
            .collect();
        assert!(places.contains(&at), "{at} not among {places:?}");
    }
    let (got, _) = send("pharmacy-aozora", good.to_string(), "text/plain").await;
    assert_eq!(got, 415);
    let (got, _) = send("insurer-kenpo", good.to_string(), "application/fhir+json").await;
    assert_eq!(got, 403);
    // Nothing refused was kept.
    let answer = http
        .get(format!("{url}/claims"))
        .bearer_auth(&keys["pharmacy-aozora"])
        .send()
        .await
        .unwrap();
    let listed: Value = answer.json().await.unwrap();
    assert_eq!(listed["claims"], json!([]), "{listed}");
    service.stop().await;
}

/// Reads server-sent events off `response` until `take` have come (or the stream ends), then
/// drops the connection wherever it is; each event's (id, data).
async fn read_events(response: &mut reqwest::Response, take: usize) -> Vec<(i64, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.len() < take {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk()).await;
        let Ok(Ok(Some(chunk))) = chunk else {
            break;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
                if events.len() == take {
                    break;
                }
            }
        }
    }
    events
}

#[tokio::test]
async fn a_feed_reader_cut_off_twenty_times_at_random_receives_every_claim_exactly_once() {
    use hixbus_contracts::samples;
    let stack = BusStack::start().await;
    let (directory, keys) = directory_with_keys(DEMO_ORGANIZATIONS);
    let db = fresh_database(Backend::Postgres).await;
    let (feed, service) = start_service(Kind::InsurerFeed, &stack, &directory, Some(&db)).await;
    let publisher = hixbus_bus::Publisher::new(&stack.kafka, stack.codec()).unwrap();
    const CLAIMS: usize = 150;
    // Claims keep arriving while the reader comes and goes, so it meets the live end too.
    let producer = tokio::spawn(async move {
        for i in 0..CLAIMS {
            let mut claim = samples::claim_submitted(&format!("feed-patient-{}", i % 17));
            claim.envelope.event_id = uuid::Uuid::new_v4().to_string();
            claim.claim_id = format!("feed-claim-{i:03}");
            claim.version = 1;
            claim.replaces_event_id = None;
            publisher.publish(&claim).await.unwrap();
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift: reproducible from the printed seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let http = reqwest::Client::new();
    let mut received: Vec<String> = Vec::new();
    let mut cursor = 0i64;
    let mut cuts = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.len() < CLAIMS {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {} of {CLAIMS} claims after {cuts} cuts",
            received.len()
        );
        let mut request = http
            .get(format!("{feed}/insurer/feed/stream"))
            .bearer_auth(&keys["insurer-kenpo"]);
        if cursor > 0 {
            request = request.header("Last-Event-ID", cursor.to_string());
        }
        let mut response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let take = if cuts < 20 {
            (next() % 9 + 1) as usize
        } else {
            CLAIMS - received.len()
        };
        for (id, data) in read_events(&mut response, take).await {
            assert!(id > cursor, "seed {seed}: cursor {id} after {cursor}");
            cursor = id;
            assert_eq!(data["kind"], "claim");
            received.push(data["claim"]["claim_id"].as_str().unwrap().to_owned());
        }
        // Cut off wherever the stream is, sometimes mid-event.
        drop(response);
        cuts += 1;
    }
    producer.await.unwrap();
    assert!(cuts > 20, "seed {seed}: only {cuts} connections");
    let unique: BTreeSet<&String> = received.iter().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "seed {seed}: a claim came twice"
    );
    let expected: BTreeSet<String> = (0..CLAIMS).map(|i| format!("feed-claim-{i:03}")).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "seed {seed}"
    );
    // The other insurer's feed holds none of them.
    let other: Value = http
        .get(format!("{feed}/insurer/feed"))
        .bearer_auth(&keys["insurer-kokuho"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["entries"], json!([]));
    service.stop().await;
}

#[tokio::test]
async fn the_insurer_sees_a_returned_claim_with_its_reason_in_its_console() {
    use crate::consoles::{Driver, path_of, screenshot, sign_in, text_of, wait_for};
    let flow = Flow::start().await;
    let (web, web_service) = start_service_with(
        Kind::Web,
        &flow.stack,
        &flow.directory,
        None,
        &[
            ("pharmacy_url", flow.pharmacy.as_str()),
            ("claims_url", flow.claims.as_str()),
            ("insurer_feed_url", flow.feed.as_str()),
            ("insurer_url", flow.insurer.as_str()),
        ],
    )
    .await;
    // A pharmacy bills a prescription that was never issued: the insurer returns it.
    let (status, sent) = flow
        .submit(
            "pharmacy-aozora",
            &pharmacy_claim(
                "c-console",
                "rx-never-issued-console",
                &[CARBOCISTEINE, BASIC],
            ),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let decided = flow.decided("pharmacy-aozora", "c-console", 1).await;
    assert_eq!(decided["status"], "returned", "{decided}");
    let reason = decided["decision"]["reasons"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();

    let driver = Driver::start().await;
    // The pharmacist dispenses a real prescription with its screen open: the claim the
    // dispensing made, and the insurer's decision on it, appear on the prescription's page.
    let rx = flow
        .issue(
            "clinic-sakura",
            &bundle(
                "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json",
                "claims-console-rx",
            ),
        )
        .await;
    let counter = driver.browser().await;
    sign_in(&counter, &web, &flow.keys["pharmacy-aozora"]).await;
    flow.dispense(&rx, pharmacist()).await;
    counter
        .goto(&format!("{web}/pharmacy/rx/{rx}"))
        .await
        .unwrap();
    wait_for(&counter, "#claim[data-state=live]").await;
    wait_for(&counter, "#claim [data-outcome=accepted]").await;
    let claim = text_of(&counter, "#claim").await;
    assert!(
        claim.contains("支払決定") && claim.contains("insurer-kenpo") && claim.contains("円"),
        "{claim}"
    );
    screenshot(&counter, "pharmacy-claim").await;

    let insurer = driver.browser().await;
    sign_in(&insurer, &web, &flow.keys["insurer-kenpo"]).await;
    assert_eq!(path_of(&insurer).await, "/insurer");
    let returned = text_of(&insurer, "#returned").await;
    assert!(
        returned.contains("c-console") && returned.contains(&reason),
        "the returned claim with its reason: {returned}"
    );
    let decision = wait_for(&insurer, "#decisions tr[data-outcome=returned]")
        .await
        .text()
        .await
        .unwrap();
    assert!(decision.contains("返戻"), "{decision}");
    let received = text_of(&insurer, "#claims").await;
    assert!(received.contains("c-console"), "{received}");
    assert!(
        !received.contains("カルボシステイン"),
        "the claims table shows billing fields, not drug lines"
    );
    screenshot(&insurer, "insurer-console").await;

    // Another insurer's console shows none of it, and no pharmacy page.
    let other = driver.browser().await;
    sign_in(&other, &web, &flow.keys["insurer-kokuho"]).await;
    let page = other.source().await.unwrap();
    assert!(
        !page.contains("c-console"),
        "another insurer sees nothing of it"
    );
    other.goto(&format!("{web}/pharmacy")).await.unwrap();
    assert_eq!(text_of(&other, "h1").await, "許可されていません");
    for browser in [counter, insurer, other] {
        browser.close().await.unwrap();
    }
    drop(driver);
    web_service.stop().await;
    flow.stop().await;
}
