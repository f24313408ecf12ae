//! The patient's own record end to end on a real broker: prescriptions from two institutions,
//! their dispensing (one with a generic substitution), a laboratory's result published under
//! its own patient id and linked later by insurance, and the claims the dispensings became,
//! decided by the insurer — all in the patient's timeline and views, signed in through an
//! OpenID Connect provider and enrolled with a code from their clinic. The export parses as
//! FHIR R4 with an independent FHIR library and carries the same content; another patient sees
//! none of it; every read is audited; a rebuild from the topics gives the same record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_patient::demo::{DEMO_AUDIENCE, DemoIssuer};
use hixbus_tests::{
    Backend, BusStack, DEMO_ORGANIZATIONS, Service, directory_with_keys, fresh_database,
    start_service_with,
};
use serde_json::{Value, json};

use crate::prescriptions::{fixture, pharmacist};

const ROSTER: &str = include_str!("../../infra/insurers/insurer-kenpo.roster.csv");
const HOT9: &str = "urn:oid:1.2.392.200119.4.403.1";
/// The e-prescription examples' patient, by their insurance card.
const TARO: &str = "jp-insured:06123456:12345:67890:01";
const SSMIX2: &str = include_str!("../fixtures/hl7v2/SSMIX2-OUL-R22-utf8.hl7");

/// The SS-MIX2 example's ordering hospital, beside the demo organizations.
const TORO: &str = r#"
[[organization]]
id = "hospital-toro"
role = "hospital"
name = "登呂病院"
institution_code = "RCV"
"#;

struct Flow {
    stack: BusStack,
    directory: Arc<hixbus_access::Directory>,
    services: Vec<Service>,
    patient_service: Option<Service>,
    keys: HashMap<String, String>,
    urls: HashMap<Kind, String>,
    databases: HashMap<Kind, String>,
    issuer: Arc<DemoIssuer>,
    stop_issuer: hixbus_service::CancellationToken,
    http: reqwest::Client,
    _roster: tempfile::NamedTempFile,
}

impl Flow {
    async fn start() -> Self {
        let stack = BusStack::start().await;
        let (directory, keys) = directory_with_keys(&format!("{DEMO_ORGANIZATIONS}\n{TORO}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer_url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Arc::new(DemoIssuer::new(&issuer_url).unwrap());
        let stop_issuer = hixbus_service::CancellationToken::new();
        tokio::spawn(issuer.clone().serve(listener, stop_issuer.clone()));
        let roster = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        std::fs::write(roster.path(), ROSTER).unwrap();
        let roster_path = roster.path().display().to_string();
        let mut flow = Self {
            stack,
            directory: directory.clone(),
            services: Vec::new(),
            patient_service: None,
            keys,
            urls: HashMap::new(),
            databases: HashMap::new(),
            issuer,
            stop_issuer,
            http: reqwest::Client::new(),
            _roster: roster,
        };
        for (kind, backend, settings) in [
            (Kind::ClinicGateway, Backend::Sqlite, vec![]),
            (Kind::Pharmacy, Backend::Sqlite, vec![]),
            (Kind::LabGateway, Backend::Sqlite, vec![]),
            (Kind::Claims, Backend::Postgres, vec![]),
            (
                Kind::InsurerFeed,
                Backend::Postgres,
                vec![("evidence_wait_secs", "2")],
            ),
            (
                Kind::Insurer,
                Backend::Postgres,
                vec![
                    ("insurer", "insurer-kenpo"),
                    ("roster", roster_path.as_str()),
                ],
            ),
        ] {
            let db = fresh_database(backend).await;
            let (url, service) =
                start_service_with(kind, &flow.stack, &directory, Some(&db), &settings).await;
            flow.services.push(service);
            flow.urls.insert(kind, url);
            flow.databases.insert(kind, db);
        }
        let db = fresh_database(Backend::Postgres).await;
        flow.start_patient(&db, hixbus_patient::GROUP).await;
        flow
    }

    async fn start_patient(&mut self, db: &str, group: &str) {
        let (url, service) = self.patient_replica(db, group).await;
        self.patient_service = Some(service);
        self.urls.insert(Kind::Patient, url);
        self.databases.insert(Kind::Patient, db.to_owned());
    }

    /// A patient service on `db` in `group`: another replica when both are the running one's.
    async fn patient_replica(&self, db: &str, group: &str) -> (String, Service) {
        start_service_with(
            Kind::Patient,
            &self.stack,
            &self.directory,
            Some(db),
            &[
                ("oidc_issuer", self.issuer.issuer()),
                ("oidc_audience", DEMO_AUDIENCE),
                ("consumer_group", group),
            ],
        )
        .await
    }

    fn url(&self, kind: Kind, path: &str) -> String {
        format!("{}{path}", self.urls[&kind])
    }

    /// A call with `auth` (an organization's API key, or a patient's ID token).
    async fn call(
        &self,
        auth: &str,
        method: &str,
        url: String,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .timeout(Duration::from_secs(30));
        if !auth.is_empty() {
            request = request.bearer_auth(auth);
        }
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

    async fn org(
        &self,
        org: &str,
        method: &str,
        kind: Kind,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(&self.keys[org], method, self.url(kind, path), body)
            .await
    }

    fn token(&self, subject: &str) -> String {
        self.issuer
            .id_token(subject, DEMO_AUDIENCE, Duration::from_secs(600))
    }

    async fn patient(&self, subject: &str, path: &str) -> (u16, Value) {
        self.call(
            &self.token(subject),
            "GET",
            self.url(Kind::Patient, path),
            None,
        )
        .await
    }

    /// Issues a fixture Bundle from `issuer` to pharmacy-aozora under a new identifier; its id
    /// once the pharmacy has it.
    async fn issue(&self, issuer: &str, name: &str, identifier: &str) -> String {
        let mut bundle = fixture(name);
        bundle["identifier"]["value"] = json!(identifier);
        let (status, accepted) = self
            .org(
                issuer,
                "POST",
                Kind::ClinicGateway,
                "/fhir/Bundle?target_pharmacy=pharmacy-aozora",
                Some(bundle),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["prescription_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .org(
                "pharmacy-aozora",
                "GET",
                Kind::Pharmacy,
                &format!("/pharmacy/prescriptions/{id}"),
                None,
            )
            .await
            .0
            != 200
        {
            assert!(Instant::now() < deadline, "{id} never reached the pharmacy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id
    }

    async fn dispense(&self, id: &str, body: Value) {
        let (status, answer) = self
            .org(
                "pharmacy-aozora",
                "POST",
                Kind::Pharmacy,
                &format!("/pharmacy/prescriptions/{id}/dispense"),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Taro's history: prescriptions from a hospital and a clinic, both dispensed (one line as
    /// a generic), and a laboratory's result under its own id of him, linked by insurance
    /// afterwards. The two prescription ids.
    async fn history(&self) -> (String, String) {
        // Prescriptions from a hospital and a clinic, both dispensed (one line as a generic).
        let substituted = self
            .issue(
                "hospital-daiichi",
                "Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json",
                "patient-rx-1",
            )
            .await;
        let as_prescribed = self
            .issue(
                "clinic-sakura",
                "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json",
                "patient-rx-2",
            )
            .await;
        let mut body = pharmacist();
        body["lines"] = json!([
            {"line_no": 1},
            {"line_no": 2, "substitute": {"system": HOT9, "code": "106062102", "display": "デキサンＶＧクリーム０．１２％「デモ」　５ｇ"}, "reason": "後発医薬品への変更"}
        ]);
        self.dispense(&substituted, body).await;
        self.dispense(&as_prescribed, pharmacist()).await;

        // A laboratory's result under its own id of the patient, linked by insurance afterwards.
        let (status, ack) = {
            let answer = self
                .http
                .post(self.url(Kind::LabGateway, "/hl7v2"))
                .bearer_auth(&self.keys["lab-kensa"])
                .header("content-type", "application/hl7-v2")
                .body(SSMIX2.as_bytes().to_vec())
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        };
        assert_eq!(status, 200, "{ack}");
        assert!(ack.contains("MSA|AA|"), "{ack}");
        let (status, linked) = self
            .org(
                "lab-kensa",
                "PUT",
                Kind::LabGateway,
                "/fhir/Patient/0001000052",
                Some(json!({
                    "resourceType": "Patient", "id": "0001000052",
                    "identifier": [{"system": "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID", "value": "06123456:12345:67890:01"}]
                })),
            )
            .await;
        assert_eq!(status, 201, "{linked}");

        (substituted, as_prescribed)
    }

    /// An enrolment code `org` gets for the holder of `card` (insurer, symbol, number, branch).
    async fn code(&self, org: &str, card: [&str; 4]) -> (u16, Value) {
        let body = json!({"insurance": {"insurer": card[0], "symbol": card[1], "number": card[2], "branch": card[3]}});
        self.org(
            org,
            "POST",
            Kind::Patient,
            "/patient/enrolment-codes",
            Some(body),
        )
        .await
    }

    async fn enrol(&self, subject: &str, code: &str) -> (u16, Value) {
        self.call(
            &self.token(subject),
            "POST",
            self.url(Kind::Patient, "/patient/enrol"),
            Some(json!({"code": code})),
        )
        .await
    }

    /// The whole timeline of `subject`, once `ready` holds of it (read again until it does).
    async fn timeline_when(&self, subject: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let entries = self.timeline(subject, "").await;
            if ready(&entries) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "{subject}'s timeline never got there: {entries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every timeline entry of `subject` with `query`, following the pages (10 at a time).
    async fn timeline(&self, subject: &str, query: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut path = format!("/patient/timeline?limit=10{query}");
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let (status, page) = self.patient(subject, &path).await;
            assert_eq!(status, 200, "{page}");
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => before = Some(next.to_owned()),
                None => return entries,
            }
        }
    }

    /// (org, action) of each audit entry about `patient` in the patient service.
    async fn audited(&self, patient: &str) -> Vec<(String, String, String)> {
        let db = hixbus_storage::Database::connect(&self.databases[&Kind::Patient])
            .await
            .unwrap();
        sqlx::query_as(
            "SELECT org_id, action, subject_id FROM audit_log WHERE patient_ref = $1 ORDER BY at",
        )
        .bind(patient)
        .fetch_all(&db.pool)
        .await
        .unwrap()
    }

    /// Waits until the patient service's trail holds exactly the audit rows every service
    /// recorded about Taro (under any of his references); those event ids.
    async fn trail_is_complete(&self) -> std::collections::BTreeSet<String> {
        let patient_db = hixbus_storage::Database::connect(&self.databases[&Kind::Patient])
            .await
            .unwrap();
        let store = hixbus_patient::store::Store::new(patient_db.clone())
            .await
            .unwrap();
        let refs = store.refs(TARO).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut recorded = std::collections::BTreeSet::new();
            for url in self.databases.values() {
                let db = hixbus_storage::Database::connect(url).await.unwrap();
                for r in &refs {
                    let ids: Vec<String> = sqlx::query_scalar(
                        "SELECT event_id FROM audit_log WHERE patient_ref = $1 AND event_id IS NOT NULL",
                    )
                    .bind(r)
                    .fetch_all(&db.pool)
                    .await
                    .unwrap();
                    recorded.extend(ids);
                }
            }
            let on_trail: std::collections::BTreeSet<String> =
                hixbus_patient::trail::for_patient(&patient_db, &refs)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(_, _, _, e)| e.envelope.event_id)
                    .collect();
            if on_trail == recorded {
                return recorded;
            }
            assert!(
                Instant::now() < deadline,
                "the trail differs from the audit logs: missing {:?}, extra {:?}",
                recorded.difference(&on_trail).collect::<Vec<_>>(),
                on_trail.difference(&recorded).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Rebuilt from the topics into an empty database (a new consumer group), Taro's record
    /// and consents are what they were.
    async fn assert_rebuilds_the_same(&mut self) {
        let before = record_of(&self.databases[&Kind::Patient]).await;
        let fresh = fresh_database(Backend::Postgres).await;
        self.patient_service.take().unwrap().stop().await;
        self.start_patient(&fresh, "hixbus-patient-rebuild").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rebuilt = record_of(&fresh).await;
            if rebuilt == before {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the rebuilt record differs:\n{rebuilt:#?}\nwas\n{before:#?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.patient_service.take() {
            s.stop().await;
        }
        for service in self.services {
            service.stop().await;
        }
        self.stop_issuer.cancel();
    }
}

fn of_kind<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["kind"] == kind).collect()
}

/// The decided claims of a timeline.
fn decided(entries: &[Value]) -> usize {
    of_kind(entries, "claim")
        .iter()
        .filter(|c| !c["detail"]["decision"].is_null())
        .count()
}

/// What the FHIR library read of an export (tests/python/fhir_r4_check.py).
async fn read_as_r4(bundle: &Value) -> Value {
    use tokio::io::AsyncWriteExt as _;
    let python = std::env::var("HIXBUS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fhir_r4_check.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(bundle.to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the export is not valid FHIR R4:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn a_patient_sees_their_whole_record_exports_it_as_r4_and_no_one_elses() {
    let flow = Flow::start().await;

    let (substituted, as_prescribed) = flow.history().await;

    // Enrolment: the clinic checked Taro's card and hands him a code; he redeems it signed in.
    let (status, issued) = flow
        .code("clinic-sakura", ["06123456", "12345", "67890", "01"])
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["patient_ref"], TARO);
    let code = issued["code"].as_str().unwrap().to_owned();
    // Before enrolling, the sign-in reads nothing.
    let (status, _) = flow.patient("taro", "/patient/timeline").await;
    assert_eq!(status, 403);
    let (status, answer) = flow.enrol("taro", &code.to_lowercase()).await;
    assert_eq!(status, 200, "{answer}");
    // A code works once; a made-up one never.
    assert_eq!(flow.enrol("mallory", &code).await.0, 422);
    assert_eq!(flow.enrol("mallory", "AAAA-BBBB-CCCC").await.0, 422);
    // Only institutions that check insurance cards hand out codes.
    assert_eq!(
        flow.code("lab-kensa", ["06123456", "12345", "67890", "01"])
            .await
            .0,
        403
    );
    assert_eq!(
        flow.code("insurer-kenpo", ["06123456", "12345", "67890", "01"])
            .await
            .0,
        403
    );
    assert_eq!(flow.code("clinic-sakura", ["", "1", "2", "3"]).await.0, 422);
    // Hanako, another patient (insurer-kokuho), enrolled through a pharmacy.
    let (status, other) = flow
        .code("pharmacy-aozora", ["138016", "1", "2", "00"])
        .await;
    assert_eq!(status, 201, "{other}");
    assert_eq!(
        flow.enrol("hanako", other["code"].as_str().unwrap())
            .await
            .0,
        200
    );
    // Taro's sign-in cannot be enrolled as Hanako too.
    let (_, third) = flow
        .code("pharmacy-aozora", ["138016", "1", "2", "00"])
        .await;
    assert_eq!(
        flow.enrol("taro", third["code"].as_str().unwrap()).await.0,
        409
    );

    // Everything arrives: 2 prescriptions, 2 dispensings, the lab report, 2 decided claims.
    let timeline = flow
        .timeline_when("taro", |t| {
            of_kind(t, "prescription").len() == 2
                && of_kind(t, "dispensing").len() == 2
                && of_kind(t, "lab_result").len() == 1
                && decided(t) == 2
        })
        .await;
    // Newest first.
    let times: Vec<&str> = timeline.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);

    // The content, as the institutions sent it.
    let prescription = |id: &str| {
        of_kind(&timeline, "prescription")
            .into_iter()
            .find(|p| p["detail"]["prescription_id"] == id)
            .unwrap()
            .clone()
    };
    let daiichi = prescription(&substituted);
    assert_eq!(daiichi["org"], "hospital-daiichi");
    assert_eq!(daiichi["detail"]["status"], "issued");
    let daiichi_drugs: Vec<&str> = daiichi["detail"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["drug"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(daiichi_drugs, ["103831601", "106062101"]);
    assert_eq!(prescription(&as_prescribed)["org"], "clinic-sakura");
    let dispensing = of_kind(&timeline, "dispensing")
        .into_iter()
        .find(|d| d["detail"]["prescription_id"] == substituted.as_str())
        .unwrap();
    assert_eq!(dispensing["org"], "pharmacy-aozora");
    assert_eq!(
        dispensing["detail"]["lines"][1]["drug"]["code"],
        "106062102"
    );
    assert_eq!(dispensing["detail"]["lines"][1]["substituted"], true);
    let lab = of_kind(&timeline, "lab_result")[0];
    assert_eq!(lab["org"], "lab-kensa");
    assert_eq!(lab["detail"]["report_id"], "000000001219001");
    let results: Vec<(String, f64)> = lab["detail"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("A/G比".to_owned(), 1.7),
            ("総蛋白".to_owned(), 7.2),
            ("アルブミン".to_owned(), 4.9)
        ]
    );
    assert_eq!(lab["detail"]["results"][1]["reference_range"]["low"], 6.7);
    assert_eq!(lab["detail"]["results"][1]["unit"], "g/dl");

    // Filtered by kind and by date: the 2011 result alone, then everything since today.
    let labs_only = flow.timeline("taro", "&kind=lab_result").await;
    assert_eq!(labs_only.len(), 1);
    let old = flow
        .timeline("taro", "&from=2011-12-01&to=2011-12-31")
        .await;
    assert_eq!(old.len(), 1, "{old:#?}");
    let today = hixbus_contracts::lifecycle::today_in_japan().to_string();
    let recent = flow.timeline("taro", &format!("&from={today}")).await;
    assert_eq!(recent.len(), timeline.len() - 1);
    for bad in [
        "kind=xray",
        "from=2024-13-01",
        "limit=0",
        "limit=100000",
        "before=forged",
        "from=2025-01-02&to=2025-01-01",
        "patient=jp-insured:138016:1:2:00",
    ] {
        let (status, body) = flow
            .patient("taro", &format!("/patient/timeline?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["reason"].is_string(), "{body}");
    }

    // Current medications: both prescriptions, being taken, the generic as handed over.
    let (status, meds) = flow.patient("taro", "/patient/medications").await;
    assert_eq!(status, 200);
    let meds = meds["medications"].as_array().unwrap();
    assert!(meds.iter().all(|m| m["status"] == "taking"), "{meds:#?}");
    let generic = meds
        .iter()
        .find(|m| m["prescription_id"] == substituted.as_str() && m["line_no"] == 2)
        .unwrap();
    assert_eq!(generic["drug"]["code"], "106062102");
    assert_eq!(generic["prescribed_drug"]["code"], "106062101");
    assert_eq!(generic["substituted"], true);

    // Lab trends: each test with the range that applied.
    let (status, trends) = flow
        .patient("taro", "/patient/lab-trends?code=3A010000002327101")
        .await;
    assert_eq!(status, 200);
    assert_eq!(trends["tests"].as_array().unwrap().len(), 1);
    assert_eq!(trends["tests"][0]["values"][0]["value"], 7.2);
    assert_eq!(
        trends["tests"][0]["values"][0]["reference_range"]["high"],
        8.3
    );

    // Medical expenses: what the care cost, what Taro paid, what the insurer paid.
    let (status, expenses) = flow.patient("taro", "/patient/expenses").await;
    assert_eq!(status, 200);
    let mut claims: Vec<(i64, i64, i64, String)> = expenses["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["total_jpy"].as_i64().unwrap(),
                c["patient_jpy"].as_i64().unwrap(),
                c["insurer_jpy"].as_i64().unwrap(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    claims.sort();
    assert_eq!(
        claims,
        [
            (1740, 520, 1220, "APPROVED".to_owned()),
            (4090, 1230, 2860, "APPROVED".to_owned())
        ]
    );
    assert_eq!(expenses["years"][0]["total_jpy"], 5830);
    assert_eq!(expenses["years"][0]["patient_jpy"], 1750);

    // The export: valid R4 to an independent FHIR library, with the same content.
    let (status, bundle) = flow.patient("taro", "/patient/export").await;
    assert_eq!(status, 200);
    let read = read_as_r4(&bundle).await;
    let count = |t: &str| {
        read["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[0] == t)
            .count()
    };
    let prescribed_lines: usize = of_kind(&timeline, "prescription")
        .iter()
        .map(|p| p["detail"]["lines"].as_array().unwrap().len())
        .sum();
    let dispensed_lines: usize = of_kind(&timeline, "dispensing")
        .iter()
        .map(|d| d["detail"]["lines"].as_array().unwrap().len())
        .sum();
    assert_eq!(count("Patient"), 1);
    assert_eq!(count("MedicationRequest"), prescribed_lines);
    assert_eq!(count("MedicationDispense"), dispensed_lines);
    assert_eq!(count("DiagnosticReport"), 1);
    assert_eq!(count("Observation"), 3);
    assert_eq!(count("Claim"), 2);
    assert_eq!(count("ClaimResponse"), 2);
    assert!(count("AuditEvent") > 0);
    let mut totals: Vec<i64> = read["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["total"].as_i64().unwrap())
        .collect();
    totals.sort();
    assert_eq!(totals, [1740, 4090]);
    let mut paid: Vec<i64> = read["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["paid"].as_i64().unwrap())
        .collect();
    paid.sort();
    assert_eq!(paid, [1220, 2860]);
    assert!(
        read["dispenses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "106062102" && d["substituted"] == true)
    );
    let values: Vec<f64> = read["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.7, 7.2, 4.9]);

    // Hanako sees none of it, on every route; no one without a sign-in sees anything.
    for path in [
        "/patient/timeline",
        "/patient/medications",
        "/patient/lab-trends",
        "/patient/checkups",
        "/patient/expenses",
        "/patient/export",
        "/patient/me",
    ] {
        let (status, body) = flow.patient("hanako", path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let text = body.to_string();
        assert!(
            !text.contains(TARO),
            "{path} shows Taro's reference: {text}"
        );
        assert!(
            !text.contains(&substituted),
            "{path} shows Taro's prescription: {text}"
        );
        assert!(
            !text.contains("lab-kensa"),
            "{path} shows Taro's result: {text}"
        );
        // Organizations' keys and no credentials at all are not patients.
        let url = flow.url(Kind::Patient, path);
        assert_eq!(
            flow.call(&flow.keys["clinic-sakura"], "GET", url.clone(), None)
                .await
                .0,
            401,
            "{path}"
        );
        assert_eq!(
            flow.call("", "GET", url.clone(), None).await.0,
            401,
            "{path}"
        );
        let foreign = DemoIssuer::new(flow.issuer.issuer()).unwrap();
        let forged = foreign.id_token("taro", DEMO_AUDIENCE, Duration::from_secs(600));
        assert_eq!(flow.call(&forged, "GET", url, None).await.0, 401, "{path}");
    }
    let (_, hanako) = flow.patient("hanako", "/patient/timeline").await;
    assert_eq!(hanako["entries"], json!([]));

    // Proxy access: Taro's mother, signed in with her own account, reads his record once he
    // invites her, and not after he revokes it; she cannot manage his proxies.
    let taro_token = flow.token("taro");
    let mother = flow.token("mother");
    let as_taro = async |method: &str, path: &str, body: Option<Value>| {
        flow.call(&taro_token, method, flow.url(Kind::Patient, path), body)
            .await
    };
    let (status, invited) = as_taro(
        "POST",
        "/patient/delegations",
        Some(json!({"relationship": "parent", "days": 365})),
    )
    .await;
    assert_eq!(status, 201, "{invited}");
    let acting = |token: &str, act_for: &str, path: &str| {
        flow.http
            .get(flow.url(Kind::Patient, path))
            .bearer_auth(token)
            .header("hixbus-act-for", act_for)
            .send()
    };
    // Not before accepting; Taro cannot be his own proxy.
    assert_eq!(
        acting(&mother, TARO, "/patient/timeline")
            .await
            .unwrap()
            .status(),
        403
    );
    let (status, _) = flow
        .call(
            &taro_token,
            "POST",
            flow.url(Kind::Patient, "/patient/delegations/accept"),
            Some(json!({"code": invited["code"]})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, accepted) = flow
        .call(
            &mother,
            "POST",
            flow.url(Kind::Patient, "/patient/delegations/accept"),
            Some(json!({"code": invited["code"]})),
        )
        .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["act_for"], TARO);
    let (_, whom) = flow
        .call(
            &mother,
            "GET",
            flow.url(Kind::Patient, "/patient/acting-for"),
            None,
        )
        .await;
    assert_eq!(whom["patients"][0]["act_for"], TARO);
    let answer = acting(&mother, TARO, "/patient/timeline?limit=200")
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen: Value = answer.json().await.unwrap();
    assert_eq!(seen["entries"].as_array().unwrap().len(), timeline.len());
    // Only as Taro's proxy: not as herself, not for Hanako, not managing his proxies.
    assert_eq!(
        flow.call(
            &mother,
            "GET",
            flow.url(Kind::Patient, "/patient/timeline"),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        acting(&mother, "jp-insured:138016:1:2:00", "/patient/timeline")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        acting(&mother, TARO, "/patient/delegations")
            .await
            .unwrap()
            .status(),
        403
    );
    let (_, proxies) = as_taro("GET", "/patient/delegations", None).await;
    assert_eq!(proxies["delegations"][0]["status"], "active");
    assert_eq!(proxies["delegations"][0]["proxy"]["subject"], "mother");
    let id = invited["id"].as_str().unwrap();
    let (status, _) = as_taro("DELETE", &format!("/patient/delegations/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        acting(&mother, TARO, "/patient/timeline")
            .await
            .unwrap()
            .status(),
        403
    );

    // Every read Taro made is in the audit log under his sign-in, and only his.
    let audited = flow.audited(TARO).await;
    let reads: Vec<&(String, String, String)> = audited
        .iter()
        .filter(|(_, action, _)| action.starts_with("patient."))
        .collect();
    assert!(
        reads
            .iter()
            .any(|(who, action, _)| who == "patient:taro" && action == "patient.export")
    );
    assert!(
        reads
            .iter()
            .any(|(who, action, _)| who == "patient:taro" && action == "patient.expenses")
    );
    assert!(
        reads
            .iter()
            .any(|(who, action, _)| who == "clinic-sakura" && action == "patient.enrolment_code")
    );
    assert!(
        reads.iter().all(|(who, _, _)| who != "patient:hanako"),
        "{reads:?}"
    );
    let proxy_name = format!("proxy:mother:{id}");
    assert!(
        reads
            .iter()
            .any(|(who, action, _)| *who == proxy_name && action == "patient.timeline"),
        "{reads:?}"
    );

    // The trail: every access any service recorded about Taro, no more, no less, across the
    // gateway, the pharmacy, the lab gateway, claims, the insurer and this service.
    let trail = flow.trail_is_complete().await;
    assert!(trail.len() > 20, "{}", trail.len());
    let (_, access) = flow.patient("taro", "/patient/access").await;
    let services: std::collections::BTreeSet<&str> = access["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    for service in [
        "hixbus-clinic-gateway",
        "hixbus-pharmacy",
        "hixbus-lab-gateway",
        "hixbus-insurer-feed",
        "hixbus-patient",
    ] {
        assert!(services.contains(service), "{service} not in {services:?}");
    }
    let pharmacy_read = access["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["who"] == "pharmacy-aozora")
        .unwrap();
    assert_eq!(pharmacy_read["role"], "pharmacy");
    assert_eq!(pharmacy_read["purpose"], "DISPENSING");
    // Hanako's trail holds her own entries, none of Taro's.
    let (_, hanako_access) = flow.patient("hanako", "/patient/access").await;
    let hanako_entries = hanako_access["entries"].as_array().unwrap();
    assert!(!hanako_entries.is_empty());
    assert!(
        hanako_entries
            .iter()
            .all(|e| !trail.contains(e["event_id"].as_str().unwrap())),
        "{hanako_access}"
    );
    let download = flow
        .http
        .get(flow.url(Kind::Patient, "/patient/access/download"))
        .bearer_auth(flow.token("taro"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(download.lines().count() >= trail.len(), "{download}");
    assert!(
        download
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).unwrap()["hash"].is_string())
    );

    // Tamper-evident: intact now; one stored entry altered, and verification names it.
    let patient_db = hixbus_storage::Database::connect(&flow.databases[&Kind::Patient])
        .await
        .unwrap();
    let heads = match hixbus_patient::trail::verify(&patient_db).await.unwrap() {
        hixbus_patient::trail::Verdict::Intact(heads) => heads,
        broken => panic!("{broken:?}"),
    };
    let (chain, entries, _) = heads.iter().max_by_key(|h| h.1).unwrap().clone();
    let victim = entries / 2;
    sqlx::query("UPDATE audit_trail SET entry = replace(entry, 'patient', 'nobody') WHERE chain = $1 AND seq = $2")
        .bind(chain)
        .bind(victim)
        .execute(&patient_db.pool)
        .await
        .unwrap();
    match hixbus_patient::trail::verify(&patient_db).await.unwrap() {
        hixbus_patient::trail::Verdict::Broken {
            chain: c,
            seq,
            problem,
            ..
        } => {
            assert_eq!((c, seq), (chain, victim), "{problem}");
            assert!(problem.contains("altered"), "{problem}");
        }
        intact => panic!("not detected: {intact:?}"),
    }

    flow.stop().await;
}

/// (kind, producing organization) of each entry, sorted.
type Entries = Vec<(String, String)>;

/// A summary as (own, others).
fn parts(summary: &Value) -> (Entries, Entries) {
    let pairs = |key: &str| {
        let mut v: Entries = summary[key]
            .as_array()
            .unwrap_or_else(|| panic!("{summary}"))
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_owned(),
                    e["org"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    (pairs("own"), pairs("other_institutions"))
}

#[tokio::test]
async fn consent_decides_what_a_treating_institution_sees_and_revocation_holds_on_every_replica_within_a_second()
 {
    let mut flow = Flow::start().await;
    let (substituted, _) = flow.history().await;
    let (_, issued) = flow
        .code("clinic-sakura", ["06123456", "12345", "67890", "01"])
        .await;
    assert_eq!(
        flow.enrol("taro", issued["code"].as_str().unwrap()).await.0,
        200
    );
    flow.timeline_when("taro", |t| {
        of_kind(t, "prescription").len() == 2
            && of_kind(t, "dispensing").len() == 2
            && of_kind(t, "lab_result").len() == 1
    })
    .await;
    // A second replica on the same database and group.
    let (replica, replica_service) = flow
        .patient_replica(&flow.databases[&Kind::Patient], hixbus_patient::GROUP)
        .await;
    let summary_path = format!("/summary/{TARO}");
    let summary = async |org: &str, base: &str| -> (u16, Value) {
        flow.call(
            &flow.keys[org],
            "GET",
            format!("{base}{summary_path}"),
            None,
        )
        .await
    };
    let primary = flow.urls[&Kind::Patient].clone();

    // Without consent: each institution its own data only.
    let (status, sakura) = summary("clinic-sakura", &primary).await;
    assert_eq!(status, 200, "{sakura}");
    let own_only = parts(&sakura);
    assert_eq!(
        own_only,
        (
            vec![
                ("dispensing".to_owned(), "pharmacy-aozora".to_owned()),
                ("prescription".to_owned(), "clinic-sakura".to_owned())
            ],
            vec![]
        ),
        "{sakura}"
    );
    assert_eq!(
        sakura["needs_consent"],
        json!(["PRESCRIPTIONS", "DISPENSATIONS", "LAB_RESULTS"])
    );
    let (_, minato) = summary("hospital-minato", &primary).await;
    assert_eq!(parts(&minato), (vec![], vec![]));
    // A laboratory and an insurer read no summaries.
    assert_eq!(summary("lab-kensa", &primary).await.0, 403);
    assert_eq!(summary("insurer-kenpo", &primary).await.0, 403);

    // A visit consent for the clinic: everything from every institution, for 24 hours.
    let taro = flow.token("taro");
    let grant = |body: Value| {
        flow.call(
            &taro,
            "POST",
            flow.url(Kind::Patient, "/patient/consents"),
            Some(body),
        )
    };
    let (status, visit) =
        grant(json!({"grantee_org": "clinic-sakura", "scope": ["ALL"], "kind": "visit"})).await;
    assert_eq!(status, 201, "{visit}");
    assert_eq!(visit["kind"], "visit");
    assert_eq!(visit["in_force"], true);
    let visit_id = visit["consent_id"].as_str().unwrap().to_owned();
    let with_consent = (
        own_only.0.clone(),
        vec![
            ("dispensing".to_owned(), "pharmacy-aozora".to_owned()),
            ("lab_result".to_owned(), "lab-kensa".to_owned()),
            ("prescription".to_owned(), "hospital-daiichi".to_owned()),
        ],
    );
    for base in [&primary, &replica] {
        let (_, seen) = summary("clinic-sakura", base).await;
        assert_eq!(parts(&seen), with_consent, "{base}: {seen}");
        assert!(
            seen["other_institutions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["shown_under"] == format!("consent:{visit_id}"))
        );
        assert!(seen.to_string().contains(&substituted));
    }
    // Not for anyone else, and a bad grant is refused.
    assert_eq!(
        parts(&summary("hospital-minato", &primary).await.1),
        (vec![], vec![])
    );
    for bad in [
        json!({"grantee_org": "insurer-kenpo", "scope": ["ALL"], "kind": "visit"}),
        json!({"grantee_org": "clinic-nowhere", "scope": ["ALL"], "kind": "visit"}),
        json!({"grantee_org": "clinic-sakura", "scope": [], "kind": "visit"}),
        json!({"grantee_org": "clinic-sakura", "scope": ["ALL"], "kind": "forever"}),
        json!({"grantee_org": "clinic-sakura", "scope": ["XRAYS"], "kind": "visit"}),
    ] {
        let (status, body) = grant(bad.clone()).await;
        assert!(status == 422 || status == 400, "{bad}: {status} {body}");
    }

    // Revoked on the primary: both replicas show the clinic its own data only, within 1 s.
    let revoked_at = Instant::now();
    let (status, revoked) = flow
        .call(
            &flow.token("taro"),
            "DELETE",
            flow.url(Kind::Patient, &format!("/patient/consents/{visit_id}")),
            None,
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["in_force"], false);
    for base in [&primary, &replica] {
        loop {
            let (_, seen) = summary("clinic-sakura", base).await;
            if parts(&seen) == own_only {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "{base} still shows other institutions' data {:?} after the revocation: {seen}",
                revoked_at.elapsed()
            );
        }
    }
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Hanako cannot revoke (or learn of) Taro's consents.
    let (_, other) = flow
        .code("pharmacy-aozora", ["138016", "1", "2", "00"])
        .await;
    assert_eq!(
        flow.enrol("hanako", other["code"].as_str().unwrap())
            .await
            .0,
        200
    );
    let (status, _) = flow
        .call(
            &flow.token("hanako"),
            "DELETE",
            flow.url(Kind::Patient, &format!("/patient/consents/{visit_id}")),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A standing consent for results only.
    let (status, labs) = grant(
        json!({"grantee_org": "hospital-minato", "scope": ["LAB_RESULTS"], "kind": "standing"}),
    )
    .await;
    assert_eq!(status, 201, "{labs}");
    assert_eq!(labs["kind"], "standing");
    let (_, minato) = summary("hospital-minato", &replica).await;
    assert_eq!(
        parts(&minato),
        (
            vec![],
            vec![("lab_result".to_owned(), "lab-kensa".to_owned())]
        )
    );
    assert_eq!(
        minato["needs_consent"],
        json!(["PRESCRIPTIONS", "DISPENSATIONS"])
    );

    // Break-glass: a reason, a time limit, then everything; the patient sees it first.
    let break_glass = |body: Value| {
        flow.call(
            &flow.keys["hospital-minato"],
            "POST",
            flow.url(Kind::Patient, &format!("{summary_path}/break-glass")),
            Some(body),
        )
    };
    assert_eq!(break_glass(json!({"reason": "urgent"})).await.0, 422);
    assert_eq!(
        break_glass(
            json!({"reason": "unconscious on arrival, no consent possible", "minutes": 1000})
        )
        .await
        .0,
        422
    );
    assert_eq!(
        flow.call(
            &flow.keys["pharmacy-aozora"],
            "POST",
            flow.url(Kind::Patient, &format!("{summary_path}/break-glass")),
            Some(json!({"reason": "unconscious on arrival, no consent possible"})),
        )
        .await
        .0,
        403
    );
    let (status, opened) = break_glass(
        json!({"reason": "unconscious on arrival, no consent possible", "minutes": 30}),
    )
    .await;
    assert_eq!(status, 201, "{opened}");
    let (_, minato) = summary("hospital-minato", &primary).await;
    assert_eq!(minato["break_glass"], true);
    let everything_else: Entries = [
        ("dispensing", "pharmacy-aozora"),
        ("dispensing", "pharmacy-aozora"),
        ("lab_result", "lab-kensa"),
        ("prescription", "clinic-sakura"),
        ("prescription", "hospital-daiichi"),
    ]
    .iter()
    .map(|(k, o)| ((*k).to_owned(), (*o).to_owned()))
    .collect();
    assert_eq!(parts(&minato), (vec![], everything_else), "{minato}");
    // The trail reaches the patient within moments of each access.
    flow.trail_is_complete().await;
    let (status, access) = flow.patient("taro", "/patient/access").await;
    assert_eq!(status, 200);
    assert_eq!(access["break_glass"][0]["org"], "hospital-minato");
    assert_eq!(
        access["break_glass"][0]["reason"],
        "unconscious on arrival, no consent possible"
    );
    let readers: Vec<(&str, &str)> = access["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["who"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    for expected in [
        ("clinic-sakura", "summary.read"),
        ("hospital-minato", "summary.read"),
        ("hospital-minato", "summary.break_glass"),
        ("patient:taro", "patient.consent.grant"),
        ("patient:taro", "patient.consent.revoke"),
    ] {
        assert!(
            readers.contains(&expected),
            "{expected:?} not in {readers:?}"
        );
    }
    // Every summary read names the policy version and what it rested on.
    let audited = flow.audited(TARO).await;
    let reads: Vec<&String> = audited
        .iter()
        .filter(|(_, action, _)| action == "summary.read")
        .map(|(_, _, what)| what)
        .collect();
    assert!(
        reads
            .iter()
            .all(|w| w.starts_with("policy=hixbus-consent-2026-11; shown="))
    );
    assert!(
        reads
            .iter()
            .any(|w| w.contains(&format!("consent:{visit_id}")))
    );
    assert!(reads.iter().any(|w| w.contains("break-glass:")));
    assert!(reads.iter().any(|w| w.ends_with("shown=own only")));

    // Research: opted out, on the consents topic for the research stream to obey.
    let (status, _) = flow
        .call(
            &flow.token("taro"),
            "PUT",
            flow.url(Kind::Patient, "/patient/research"),
            Some(json!({"opted_out": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, consents) = flow.patient("taro", "/patient/consents").await;
    assert_eq!(consents["research"]["opted_out"], true);
    assert_eq!(consents["policy_version"], "hixbus-consent-2026-11");
    assert!(consents["notes"].to_string().contains("特定健診"));
    let listed: Vec<(&str, &str)> = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["consent_id"].as_str().unwrap(),
                c["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(visit_id.as_str(), "REVOKED")),
        "{listed:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let on_topic =
            crate::labs::on_topic::<hixbus_contracts::ConsentChanged>(&flow.stack, "consents")
                .await;
        if on_topic.iter().any(|c| {
            c.purpose == hixbus_contracts::PurposeOfUse::Research
                && c.decision == hixbus_contracts::ConsentDecision::Revoked
                && c.envelope.patient_ref == TARO
        }) && on_topic.len() == 4
        {
            break;
        }
        assert!(Instant::now() < deadline, "{on_topic:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The export carries the consents, as FHIR R4.
    let (_, bundle) = flow.patient("taro", "/patient/export").await;
    let read = read_as_r4(&bundle).await;
    let consent_resources = read["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[0] == "Consent")
        .count();
    assert_eq!(consent_resources, 3);

    replica_service.stop().await;
    flow.assert_rebuilds_the_same().await;
    flow.stop().await;
}

/// Taro's record in the patient service's database `db`: the timeline items and the export's
/// resources with his consents (no audit entries: those are the service's own, not rebuilt from
/// the topics).
async fn record_of(db: &str) -> Value {
    let store =
        hixbus_patient::store::Store::new(hixbus_storage::Database::connect(db).await.unwrap())
            .await
            .unwrap();
    let refs = store.refs(TARO).await.unwrap();
    let record = store.record(&refs).await.unwrap();
    let consents = store.book.consents(&refs).await.unwrap();
    let mut bundle = hixbus_patient::export::bundle(TARO, &record, &consents, &[]);
    bundle["timestamp"] = Value::Null;
    json!({
        "timeline": record.iter().map(hixbus_patient::record::item).collect::<Vec<_>>(),
        "export": bundle,
    })
}

#[tokio::test]
async fn the_audit_log_is_shipped_to_the_trail_once_and_waits_while_the_broker_is_away() {
    let stack = BusStack::start().await;
    let db = hixbus_storage::Database::connect(&fresh_database(Backend::Sqlite).await)
        .await
        .unwrap();
    let log = hixbus_storage::AuditLog::new(db).await.unwrap();
    let (directory, _) = directory_with_keys(DEMO_ORGANIZATIONS);
    log.record("pharmacy-aozora", "inbox.read", "rx-1", TARO)
        .await
        .unwrap();
    log.record("clinic-sakura", "clinic.read", "rx-2", TARO)
        .await
        .unwrap();
    // A refused request that named no patient stays local.
    log.record("anonymous", "denied.401", "GET /x", "")
        .await
        .unwrap();

    // The broker is away: nothing is marked shipped, and nothing is lost.
    let away =
        hixbus_bus::KafkaConfig::new("127.0.0.1:9").with_option("message.timeout.ms", "1000");
    let unreachable = hixbus_bus::Publisher::new(&away, stack.codec()).unwrap();
    let failed = hixbus_service::trail::ship_once("pharmacy", &log, &unreachable, &directory).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(log.unshipped(100).await.unwrap().len(), 2);

    // Back: both are shipped, once.
    let publisher = stack.publisher();
    let shipped = hixbus_service::trail::ship_once("pharmacy", &log, &publisher, &directory)
        .await
        .unwrap();
    assert_eq!(shipped, 2);
    assert_eq!(
        hixbus_service::trail::ship_once("pharmacy", &log, &publisher, &directory)
            .await
            .unwrap(),
        0
    );
    // Read record by record rather than to the high watermark: Tansu 0.6.0 seems to report the
    // end of a partition as one past the first record of a batch when the producer sent several
    // in one (the shipper sends a round at once), so a read "to the end" stopped after one.
    let mut reader = hixbus_bus::reader::TopicReader::open(
        &stack.kafka,
        "audit",
        hixbus_bus::reader::Start::Beginning,
    )
    .unwrap();
    let codec = stack.codec();
    let mut on_topic = Vec::new();
    while on_topic.len() < 2 {
        let record = tokio::time::timeout(Duration::from_secs(30), reader.next(false))
            .await
            .expect("the trail entries reach the topic")
            .unwrap()
            .unwrap();
        match codec
            .decode(&record.payload.unwrap())
            .await
            .unwrap()
            .unwrap()
            .event
        {
            hixbus_contracts::Event::PatientDataAccessed(e) => on_topic.push(e),
            other => panic!("{other:?}"),
        }
    }
    let mut actors: Vec<(&str, &str, Option<&str>)> = on_topic
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.purpose.as_deref()))
        .collect();
    actors.sort();
    assert_eq!(
        actors,
        [
            ("clinic-sakura", "clinic.read", Some("TREATMENT")),
            ("pharmacy-aozora", "inbox.read", Some("DISPENSING")),
        ]
    );
    assert!(on_topic.iter().all(|e| e.envelope.patient_ref == TARO));
}

/// What a route does with patient data, for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audited {
    /// It returns patient data: every call is audited as this action.
    Reads(&'static str),
    /// It takes patient data in, audited as this action.
    Writes(&'static str),
    /// It carries no patient data, for this reason.
    NoPatientData(&'static str),
    /// A console page: it shows what another service's API answers the signed-in
    /// organization, and that API audits the read or write (as this action, there).
    Behind(&'static str),
    /// Dead letters an operator lists, opens or redrives: each audited as this action, which
    /// `consoles::an_operator_watches_the_exchange_and_redrives_a_dead_letter_in_the_browser`
    /// asserts (Taro's history leaves no dead letter to exercise here).
    OperatorReads(&'static str),
}

use Audited::{Behind, NoPatientData, OperatorReads, Reads, Writes};

const REGISTRY: Audited = NoPatientData("schemas and registry settings, never records");
const UNIT_TEST: Audited = NoPatientData("a unit test's own router");

/// Every route every crate declares (`.route("…"` in its source), classified. A route added
/// without being classified here fails the test below.
const ROUTES: &[(&str, &str, Audited)] = &[
    ("access", "/", UNIT_TEST),
    ("claims", "/fhir/Claim", Writes("claims.submit")),
    ("claims", "/claims", Reads("claims.read")),
    ("claims", "/claims/stream", Reads("claims.stream")),
    ("claims", "/claims/{claim_id}", Reads("claims.read")),
    (
        "clinic-gateway",
        "/fhir/Bundle",
        Writes("prescription.issue"),
    ),
    (
        "clinic-gateway",
        "/fhir/MedicationRequest",
        Writes("prescription.issue"),
    ),
    (
        "clinic-gateway",
        "/clinic/prescriptions",
        Reads("clinic.list"),
    ),
    (
        "clinic-gateway",
        "/clinic/prescriptions/{id}",
        Reads("clinic.read"),
    ),
    (
        "clinic-gateway",
        "/clinic/prescriptions/{id}/cancel",
        Writes("clinic.cancel"),
    ),
    ("clinic-gateway", "/clinic/results", Reads("results.list")),
    (
        "clinic-gateway",
        "/clinic/results/stream",
        Reads("results.stream"),
    ),
    (
        "clinic-gateway",
        "/clinic/results/{lab}/{report_id}",
        Reads("results.read"),
    ),
    (
        "clinic-gateway",
        "/clinic/results/{lab}/{report_id}/acknowledge",
        Writes("results.acknowledge"),
    ),
    ("insurer", "/insurer/decisions", Reads("insurer.decisions")),
    ("insurer-feed", "/insurer/feed", Reads("insurer.feed")),
    (
        "insurer-feed",
        "/insurer/feed/stream",
        Reads("insurer.stream"),
    ),
    ("lab-gateway", "/hl7v2", Writes("lab.report")),
    ("lab-gateway", "/fhir/Observation", Writes("lab.report")),
    (
        "lab-gateway",
        "/fhir/DiagnosticReport",
        Writes("lab.report"),
    ),
    ("lab-gateway", "/fhir/Bundle", Writes("checkup.report")),
    ("lab-gateway", "/fhir/Patient/{id}", Writes("patient.link")),
    (
        "patient",
        "/.well-known/openid-configuration",
        NoPatientData("the demo sign-in provider's public document"),
    ),
    (
        "patient",
        "/jwks.json",
        NoPatientData("the demo sign-in provider's public keys"),
    ),
    (
        "patient",
        "/authorize",
        NoPatientData("the demo sign-in provider's page: who signs in"),
    ),
    (
        "patient",
        "/token",
        NoPatientData("the demo sign-in provider's token endpoint: an ID token, no record"),
    ),
    (
        "patient",
        "/patient/enrolment-codes",
        Writes("patient.enrolment_code"),
    ),
    ("patient", "/patient/enrol", Writes("patient.enrol")),
    ("patient", "/patient/me", Reads("patient.me")),
    ("patient", "/patient/timeline", Reads("patient.timeline")),
    (
        "patient",
        "/patient/medications",
        Reads("patient.medications"),
    ),
    (
        "patient",
        "/patient/lab-trends",
        Reads("patient.lab_trends"),
    ),
    ("patient", "/patient/checkups", Reads("patient.checkups")),
    ("patient", "/patient/expenses", Reads("patient.expenses")),
    ("patient", "/patient/export", Reads("patient.export")),
    ("patient", "/patient/consents", Reads("patient.consents")),
    (
        "patient",
        "/patient/consents/{consent_id}",
        Writes("patient.consent.revoke"),
    ),
    ("patient", "/patient/research", Writes("patient.research")),
    ("patient", "/patient/access", Reads("patient.access")),
    (
        "patient",
        "/patient/access/download",
        Reads("patient.access_download"),
    ),
    (
        "patient",
        "/patient/delegations",
        Reads("patient.delegations"),
    ),
    (
        "patient",
        "/patient/delegations/accept",
        Writes("patient.delegation.accept"),
    ),
    (
        "patient",
        "/patient/delegations/{id}",
        Writes("patient.delegation.revoke"),
    ),
    (
        "patient",
        "/patient/acting-for",
        NoPatientData(
            "which patients the caller may act for: references only, their own delegations",
        ),
    ),
    ("patient", "/summary/{patient_ref}", Reads("summary.read")),
    (
        "patient",
        "/summary/{patient_ref}/break-glass",
        Writes("summary.break_glass"),
    ),
    ("pharmacy", "/pharmacy/inbox", Reads("inbox.read")),
    ("pharmacy", "/pharmacy/inbox/stream", Reads("inbox.stream")),
    ("pharmacy", "/pharmacy/claims", Reads("claim")),
    (
        "pharmacy",
        "/pharmacy/prescriptions/{id}",
        Reads("prescription.read"),
    ),
    (
        "pharmacy",
        "/pharmacy/prescriptions/{id}/dispense",
        Writes("dispense"),
    ),
    (
        "ops",
        "/ops/overview",
        NoPatientData("topics, groups, subjects and health: counts and names, never records"),
    ),
    ("ops", "/ops/dead-letters", OperatorReads("ops.dlq.list")),
    (
        "ops",
        "/ops/dead-letters/{topic}/{partition}/{offset}",
        OperatorReads("ops.dlq.show"),
    ),
    (
        "ops",
        "/ops/dead-letters/{topic}/{partition}/{offset}/redrive",
        OperatorReads("ops.dlq.redrive"),
    ),
    (
        "research",
        "/research/releases",
        NoPatientData(
            "the manifests of the caller's projects: counts, generalization levels, group shares",
        ),
    ),
    ("registry-client", "/subjects/{s}/versions", UNIT_TEST),
    ("registry-client", "/subjects/{s}", UNIT_TEST),
    ("registry-client", "/schemas/ids/{id}", UNIT_TEST),
    ("registry-client", "/subjects", UNIT_TEST),
    ("schema-registry", "/", REGISTRY),
    ("schema-registry", "/health", REGISTRY),
    ("schema-registry", "/subjects", REGISTRY),
    ("schema-registry", "/subjects/{subject}", REGISTRY),
    ("schema-registry", "/subjects/{subject}/versions", REGISTRY),
    (
        "schema-registry",
        "/subjects/{subject}/versions/{version}",
        REGISTRY,
    ),
    (
        "schema-registry",
        "/subjects/{subject}/versions/{version}/schema",
        REGISTRY,
    ),
    (
        "schema-registry",
        "/subjects/{subject}/versions/{version}/referencedby",
        REGISTRY,
    ),
    ("schema-registry", "/schemas/types", REGISTRY),
    ("schema-registry", "/schemas/ids/{id}", REGISTRY),
    ("schema-registry", "/schemas/ids/{id}/schema", REGISTRY),
    ("schema-registry", "/schemas/ids/{id}/versions", REGISTRY),
    ("schema-registry", "/schemas/ids/{id}/subjects", REGISTRY),
    ("schema-registry", "/config", REGISTRY),
    ("schema-registry", "/config/{subject}", REGISTRY),
    (
        "schema-registry",
        "/compatibility/subjects/{subject}/versions",
        REGISTRY,
    ),
    (
        "schema-registry",
        "/compatibility/subjects/{subject}/versions/{version}",
        REGISTRY,
    ),
    ("schema-registry", "/mode", REGISTRY),
    ("schema-registry", "/mode/{subject}", REGISTRY),
    ("service", "/health", NoPatientData("the liveness probe")),
    ("service", "/ready", NoPatientData("the readiness probe")),
    (
        "service",
        "/metrics",
        NoPatientData("Prometheus metrics: topics, groups, route templates, never ids"),
    ),
    ("service", "/hello", UNIT_TEST),
    ("service", "/who", UNIT_TEST),
    ("service", "/wait", UNIT_TEST),
    ("service", "/now", UNIT_TEST),
    (
        "web",
        "/",
        NoPatientData("sends the visitor to their console"),
    ),
    ("web", "/signin", NoPatientData("the sign-in form")),
    ("web", "/signout", NoPatientData("ends the session")),
    ("web", "/lang/{lang}", NoPatientData("the language switch")),
    ("web", "/static/app.css", NoPatientData("the stylesheet")),
    (
        "web",
        "/static/live.js",
        NoPatientData("the live-list script"),
    ),
    ("web", "/unsupported", NoPatientData("a notice")),
    ("web", "/pharmacy", Behind("pharmacy inbox.read")),
    ("web", "/pharmacy/rows", Behind("pharmacy inbox.read")),
    ("web", "/pharmacy/live", Behind("pharmacy inbox.stream")),
    ("web", "/pharmacy/claim", Behind("pharmacy claim")),
    (
        "web",
        "/pharmacy/rx/{id}",
        Behind("pharmacy prescription.read"),
    ),
    (
        "web",
        "/pharmacy/rx/{id}/dispense",
        Behind("pharmacy dispense"),
    ),
    (
        "web",
        "/pharmacy/rx/{id}/claim",
        Behind("claims claims.read"),
    ),
    (
        "web",
        "/pharmacy/claims/live",
        Behind("claims claims.stream"),
    ),
    ("web", "/clinic", Behind("clinic-gateway clinic.list")),
    ("web", "/clinic/rows", Behind("clinic-gateway clinic.list")),
    (
        "web",
        "/clinic/rx/{id}",
        Behind("clinic-gateway clinic.read"),
    ),
    (
        "web",
        "/clinic/rx/{id}/cancel",
        Behind("clinic-gateway cancel"),
    ),
    (
        "web",
        "/clinic/results",
        Behind("clinic-gateway results.list"),
    ),
    (
        "web",
        "/clinic/results/rows",
        Behind("clinic-gateway results.list"),
    ),
    (
        "web",
        "/clinic/results/live",
        Behind("clinic-gateway results.stream"),
    ),
    (
        "web",
        "/insurer",
        Behind("insurer-feed insurer.feed, insurer insurer.decisions"),
    ),
    ("web", "/insurer/rows", Behind("insurer-feed insurer.feed")),
    (
        "web",
        "/insurer/live",
        Behind("insurer-feed insurer.stream"),
    ),
    ("web", "/patient", NoPatientData("the portal's start")),
    (
        "web",
        "/patient/signin",
        NoPatientData("leaves for the sign-in provider"),
    ),
    ("web", "/patient/callback", Behind("patient patient.me")),
    ("web", "/me", Behind("patient patient.timeline")),
    (
        "web",
        "/me/medications",
        Behind("patient patient.medications"),
    ),
    ("web", "/me/labs", Behind("patient patient.lab_trends")),
    ("web", "/me/checkups", Behind("patient patient.checkups")),
    ("web", "/me/expenses", Behind("patient patient.expenses")),
    ("web", "/me/export", Behind("patient patient.export")),
    ("web", "/me/access", Behind("patient patient.access")),
    ("web", "/me/consents", Behind("patient patient.consents")),
    ("web", "/me/research", Behind("patient patient.research")),
    ("web", "/me/proxies", Behind("patient patient.delegations")),
    (
        "web",
        "/me/proxies/accept",
        Behind("patient patient.delegation.accept"),
    ),
    (
        "web",
        "/me/proxies/{id}/revoke",
        Behind("patient patient.delegation.revoke"),
    ),
    (
        "web",
        "/me/act-for",
        NoPatientData(
            "switches the record the session opens; the patient service audits each read of it",
        ),
    ),
    (
        "web",
        "/operator",
        NoPatientData("the operator's overview: counts, lag, health"),
    ),
    (
        "web",
        "/operator/rows",
        NoPatientData("the operator's overview: counts, lag, health"),
    ),
    (
        "web",
        "/operator/registry",
        NoPatientData("the registry's subjects"),
    ),
    ("web", "/operator/dead-letters", Behind("ops ops.dlq.list")),
    (
        "web",
        "/operator/dead-letters/{topic}/{partition}/{offset}",
        Behind("ops ops.dlq.show"),
    ),
    (
        "web",
        "/operator/dead-letters/{topic}/{partition}/{offset}/redrive",
        Behind("ops ops.dlq.redrive"),
    ),
    (
        "web",
        "/me/consents/{id}/revoke",
        Behind("patient consent revoke"),
    ),
    (
        "web",
        "/clinic/results/{lab}/{report}/ack",
        Behind("clinic-gateway results.acknowledge"),
    ),
];

/// Every consumer (`Consumer::builder(` in a source file), classified the same way: one that
/// sends patient data on to someone audits each delivery; one that keeps a read model shows it
/// only through audited routes.
const CONSUMERS: &[(&str, &str, Audited)] = &[
    (
        "claims",
        "projector.rs",
        NoPatientData("keeps claims; shown through the audited /claims routes"),
    ),
    (
        "clinic-gateway",
        "view.rs",
        NoPatientData("keeps the clinic view; shown through audited routes"),
    ),
    (
        "clinic-gateway",
        "results.rs",
        NoPatientData("keeps the results inbox; shown through audited routes"),
    ),
    (
        "insurer",
        "adjudicator.rs",
        NoPatientData(
            "decides from the insurer's own topic, delivered audited by the insurer delivery",
        ),
    ),
    ("insurer-feed", "delivery.rs", Reads("insurer.topic")),
    (
        "lab-gateway",
        "startup.rs",
        NoPatientData("keeps patient links, no clinical data"),
    ),
    (
        "medication-safety",
        "service.rs",
        NoPatientData("derives alerts onto the bus; shown through audited routes"),
    ),
    (
        "patient",
        "projector.rs",
        NoPatientData("keeps the record; shown through audited routes"),
    ),
    (
        "pharmacy",
        "projector.rs",
        NoPatientData("keeps the inbox; shown through audited routes"),
    ),
    (
        "research",
        "export.rs",
        NoPatientData(
            "keeps items until a release; what a release delivers is de-identified, and each is audited per patient (research.release)",
        ),
    ),
];

/// (crate directory, what) of each `pattern` occurrence in the crates' sources: the string
/// literal after it, or the file name.
fn declared(pattern: &str, literal: bool) -> std::collections::BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
    let mut found = std::collections::BTreeSet::new();
    let mut dirs = vec![];
    for krate in std::fs::read_dir(&root).unwrap() {
        let krate = krate.unwrap().path();
        dirs.push((
            krate.file_name().unwrap().to_string_lossy().into_owned(),
            krate.join("src"),
        ));
    }
    while let Some((krate, dir)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push((krate.clone(), path));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices(pattern) {
                let what = if literal {
                    let rest = text[at + pattern.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue;
                    };
                    rest[..rest.find('"').unwrap()].to_owned()
                } else {
                    path.file_name().unwrap().to_string_lossy().into_owned()
                };
                found.insert((krate.clone(), what));
            }
        }
    }
    found
}

/// The first event of a server-sent event stream that carries data, within 60 s.
async fn first_event(mut stream: reqwest::Response) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("an event within 60 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(event) = text
            .split("\n\n")
            .find(|e| e.contains("data:") && !e.contains("event: resync"))
        {
            return event.to_owned();
        }
    }
}

#[tokio::test]
async fn every_route_and_consumer_that_returns_patient_data_is_audited() {
    // 1. Nothing is left unclassified, and nothing classified is gone.
    let routes = declared(".route(", true);
    let classified: std::collections::BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(k, p, _)| ((*k).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        routes.difference(&classified).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes no one classified (add them to ROUTES)"
    );
    assert_eq!(
        classified.difference(&routes).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "classified routes that no longer exist"
    );
    let consumers = declared("Consumer::builder(", false);
    let classified: std::collections::BTreeSet<(String, String)> = CONSUMERS
        .iter()
        .map(|(k, f, _)| ((*k).to_owned(), (*f).to_owned()))
        .collect();
    assert_eq!(consumers, classified, "every consumer is classified");

    // 2. Every route and consumer that returns patient data, called once on Taro's history:
    // each leaves its audit row, naming him.
    let flow = Flow::start().await;
    let open = |kind: Kind, org: &str, path: &str| {
        flow.http
            .get(flow.url(kind, path))
            .bearer_auth(&flow.keys[org])
            .send()
    };
    // Live screens see only what changes after they open.
    let inbox_stream = open(Kind::Pharmacy, "pharmacy-aozora", "/pharmacy/inbox/stream")
        .await
        .unwrap();
    let claims_stream = open(Kind::Claims, "pharmacy-aozora", "/claims/stream")
        .await
        .unwrap();
    let results_stream = open(
        Kind::ClinicGateway,
        "hospital-toro",
        "/clinic/results/stream",
    )
    .await
    .unwrap();
    let (substituted, as_prescribed) = flow.history().await;
    for stream in [inbox_stream, claims_stream, results_stream] {
        assert_eq!(stream.status(), 200);
        first_event(stream).await;
    }
    let (_, issued) = flow
        .code("clinic-sakura", ["06123456", "12345", "67890", "01"])
        .await;
    assert_eq!(
        flow.enrol("taro", issued["code"].as_str().unwrap()).await.0,
        200
    );
    flow.timeline_when("taro", |t| {
        decided(t) == 2 && of_kind(t, "lab_result").len() == 1
    })
    .await;
    let feed_stream = open(
        Kind::InsurerFeed,
        "insurer-kenpo",
        "/insurer/feed/stream?after=0",
    )
    .await
    .unwrap();
    first_event(feed_stream).await;
    let ok = |answer: (u16, Value), what: &str| assert_eq!(answer.0, 200, "{what}: {}", answer.1);
    for (org, kind, path) in [
        (
            "clinic-sakura",
            Kind::ClinicGateway,
            "/clinic/prescriptions".to_owned(),
        ),
        (
            "clinic-sakura",
            Kind::ClinicGateway,
            format!("/clinic/prescriptions/{as_prescribed}"),
        ),
        (
            "hospital-toro",
            Kind::ClinicGateway,
            "/clinic/results".to_owned(),
        ),
        (
            "hospital-toro",
            Kind::ClinicGateway,
            "/clinic/results/lab-kensa/000000001219001".to_owned(),
        ),
        (
            "pharmacy-aozora",
            Kind::Pharmacy,
            "/pharmacy/inbox".to_owned(),
        ),
        (
            "pharmacy-aozora",
            Kind::Pharmacy,
            format!("/pharmacy/prescriptions/{substituted}"),
        ),
        ("pharmacy-aozora", Kind::Claims, "/claims".to_owned()),
        (
            "pharmacy-aozora",
            Kind::Claims,
            format!("/claims/dispensing:{substituted}"),
        ),
        (
            "insurer-kenpo",
            Kind::InsurerFeed,
            "/insurer/feed".to_owned(),
        ),
        (
            "insurer-kenpo",
            Kind::Insurer,
            "/insurer/decisions".to_owned(),
        ),
        ("clinic-sakura", Kind::Patient, format!("/summary/{TARO}")),
    ] {
        ok(flow.org(org, "GET", kind, &path, None).await, &path);
    }
    for path in [
        "/patient/me",
        "/patient/timeline",
        "/patient/medications",
        "/patient/lab-trends",
        "/patient/checkups",
        "/patient/expenses",
        "/patient/export",
        "/patient/consents",
        "/patient/access",
        "/patient/delegations",
    ] {
        ok(flow.patient("taro", path).await, path);
    }
    let download = flow
        .http
        .get(flow.url(Kind::Patient, "/patient/access/download"))
        .bearer_auth(flow.token("taro"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    // An open prescription, claimed at the counter with its access code.
    let mut open_rx = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    open_rx["identifier"]["value"] = json!("coverage-open-1");
    let (status, accepted) = flow
        .org(
            "clinic-sakura",
            "POST",
            Kind::ClinicGateway,
            "/fhir/Bundle",
            Some(open_rx),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let code = accepted["access_code"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = flow
            .http
            .post(flow.url(Kind::Pharmacy, "/pharmacy/claims"))
            .bearer_auth(&flow.keys["pharmacy-midori"])
            .header("content-type", "application/json")
            .body(json!({"access_code": code}).to_string())
            .send()
            .await
            .unwrap();
        let body: Value = answer.json().await.unwrap();
        if body["claimed"].as_array().is_some_and(|c| !c.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "never claimable: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A clinic's own FHIR Claim for Taro.
    let claim = crate::claims::fhir_claim(
        "professional",
        "coverage-claim-1",
        None,
        &[("urn:hixbus:medical-fee", "A000", "初診料", 1.0, "回", 2910)],
    );
    let (status, body) = flow
        .org(
            "clinic-sakura",
            "POST",
            Kind::Claims,
            "/fhir/Claim",
            Some(claim),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Each route's and consumer's action is in its service's audit log, about Taro.
    let refs = {
        let db = hixbus_storage::Database::connect(&flow.databases[&Kind::Patient])
            .await
            .unwrap();
        hixbus_patient::store::Store::new(db)
            .await
            .unwrap()
            .refs(TARO)
            .await
            .unwrap()
    };
    let kind_of = |krate: &str| match krate {
        "claims" => Kind::Claims,
        "clinic-gateway" => Kind::ClinicGateway,
        "insurer" => Kind::Insurer,
        "insurer-feed" => Kind::InsurerFeed,
        "lab-gateway" => Kind::LabGateway,
        "patient" => Kind::Patient,
        "pharmacy" => Kind::Pharmacy,
        other => panic!("{other} serves no patient data"),
    };
    let exercised_writes = [
        "claims.submit",
        "prescription.issue",
        "lab.report",
        "patient.link",
        "dispense",
        "patient.enrolment_code",
        "patient.enrol",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = Vec::new();
        for (krate, what, audited) in ROUTES.iter().chain(CONSUMERS) {
            let action = match audited {
                Reads(action) => action,
                Writes(action) if exercised_writes.contains(action) => action,
                Writes(_) | NoPatientData(_) | Behind(_) | OperatorReads(_) => continue,
            };
            let db = hixbus_storage::Database::connect(&flow.databases[&kind_of(krate)])
                .await
                .unwrap();
            let mut found = false;
            for r in &refs {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM audit_log WHERE action = $1 AND patient_ref = $2",
                )
                .bind(*action)
                .bind(r)
                .fetch_one(&db.pool)
                .await
                .unwrap();
                found |= n > 0;
            }
            if !found {
                missing.push(format!("{krate} {what}: {action}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not audited: {missing:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flow.stop().await;
}

/// At the demo provider's sign-in form: says who signs in (a real provider asks for a password
/// here) and goes back to the portal.
async fn at_the_provider(browser: &fantoccini::Client, subject: &str) {
    use crate::consoles::wait_for;
    let field = wait_for(browser, "#subject").await;
    field.clear().await.unwrap();
    field.send_keys(subject).await.unwrap();
    browser
        .find(fantoccini::Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_patient_signs_in_at_the_provider_and_sees_their_record_a_chart_who_saw_it_and_revokes_a_consent()
 {
    use crate::consoles::{Driver, done_saying, path_of, screenshot, text_of, wait_for};
    use fantoccini::Locator;
    let flow = Flow::start().await;
    flow.history().await;
    let (status, issued) = flow
        .code("clinic-sakura", ["06123456", "12345", "67890", "01"])
        .await;
    assert_eq!(status, 201, "{issued}");
    let (status, _) = flow.enrol("taro", issued["code"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let (status, consent) = flow
        .call(
            &flow.token("taro"),
            "POST",
            flow.url(Kind::Patient, "/patient/consents"),
            Some(json!({"grantee_org": "clinic-sakura", "scope": ["ALL"], "kind": "standing"})),
        )
        .await;
    assert_eq!(status, 201, "{consent}");
    let consent_id = consent["consent_id"].as_str().unwrap().to_owned();
    // Everything has arrived, and the pharmacy's read is on the trail.
    flow.timeline_when("taro", |t| {
        of_kind(t, "dispensing").len() == 2 && of_kind(t, "lab_result").len() == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, access) = flow.patient("taro", "/patient/access").await;
        if access["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["who"] == "pharmacy-aozora"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pharmacy's read never reached the trail"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (web, web_service) = start_service_with(
        Kind::Web,
        &flow.stack,
        &flow.directory,
        None,
        &[
            ("patient_url", flow.urls[&Kind::Patient].as_str()),
            ("oidc_issuer", flow.issuer.issuer()),
            ("oidc_audience", DEMO_AUDIENCE),
        ],
    )
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{web}/patient")).await.unwrap();
    browser
        .find(Locator::Css("a[href='/patient/signin']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    at_the_provider(&browser, "taro").await;
    // Back at the portal, signed in: the timeline.
    let timeline = wait_for(&browser, "#timeline").await.text().await.unwrap();
    assert_eq!(path_of(&browser).await, "/me");
    assert!(
        timeline.contains("処方") && timeline.contains("調剤") && timeline.contains("検査結果"),
        "{timeline}"
    );
    screenshot(&browser, "patient-record").await;

    // A lab chart with its reference band.
    browser.goto(&format!("{web}/me/labs")).await.unwrap();
    wait_for(&browser, "figure.chart svg polyline").await;
    wait_for(&browser, "figure.chart svg rect.band").await;
    screenshot(&browser, "patient-labs").await;

    // Who saw my data: the pharmacist's read is there.
    browser.goto(&format!("{web}/me/access")).await.unwrap();
    let read = wait_for(&browser, "#trail tr[data-who=pharmacy-aozora]")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        read.contains("あおぞら薬局"),
        "the pharmacy, by its name: {read}"
    );
    screenshot(&browser, "patient-access").await;

    // Medications with the generic handed over, medical expenses, and the export as FHIR R4.
    browser
        .goto(&format!("{web}/me/medications"))
        .await
        .unwrap();
    let medications = text_of(&browser, "ul.medications").await;
    assert!(medications.contains("後発品"), "{medications}");
    browser.goto(&format!("{web}/me/expenses")).await.unwrap();
    let expenses = text_of(&browser, "#expenses").await;
    assert!(expenses.contains("あおぞら薬局"), "{expenses}");
    let exported = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/me/export').then(r => r.json()).then(b => done(b.resourceType + '/' + b.type));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(exported, json!("Bundle/collection"));

    // Giving a consent from the screen: a visit consent for the pharmacy.
    browser.goto(&format!("{web}/me/consents")).await.unwrap();
    browser
        .find(Locator::Css("#grantee_org option[value=pharmacy-aozora]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.grant button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    done_saying(&browser, "同意しました").await;
    let (_, given) = flow.patient("taro", "/patient/consents").await;
    assert!(
        given["consents"].as_array().unwrap().iter().any(|c| {
            c["grantee_org"] == "pharmacy-aozora" && c["kind"] == "visit" && c["in_force"] == true
        }),
        "{given}"
    );

    // Revoking the consent from the screen; the patient service has it revoked.
    browser.goto(&format!("{web}/me/consents")).await.unwrap();
    wait_for(&browser, &format!("li[data-consent='{consent_id}'] button"))
        .await
        .click()
        .await
        .unwrap();
    done_saying(&browser, "取り消しました").await;
    let (_, consents) = flow.patient("taro", "/patient/consents").await;
    let now = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["consent_id"] == consent_id.as_str())
        .all(|c| c["in_force"] == false || c["decision"] != "GRANTED");
    assert!(now, "{consents}");
    assert_eq!(text_of(&browser, "h1").await, "同意の設定");

    // Opting out of research use from the same page, in plain words, and back in.
    let research = text_of(&browser, "#research").await;
    assert!(
        research.contains("いまは研究に使われることがあります"),
        "{research}"
    );
    wait_for(&browser, "#research button")
        .await
        .click()
        .await
        .unwrap();
    done_saying(&browser, "研究には使われなくなりました").await;
    wait_for(&browser, "#research[data-opted-out=true]").await;
    let (_, choice) = flow.patient("taro", "/patient/consents").await;
    assert_eq!(choice["research"]["opted_out"], true, "{choice}");
    wait_for(&browser, "#research button")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#research[data-opted-out=false]").await;
    let (_, choice) = flow.patient("taro", "/patient/consents").await;
    assert_eq!(choice["research"]["opted_out"], false, "{choice}");

    // A proxy: Taro invites his mother, who has no record here; the code is shown once.
    browser.goto(&format!("{web}/me/proxies")).await.unwrap();
    wait_for(&browser, "#relationship option[value=parent]")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#invite button")
        .await
        .click()
        .await
        .unwrap();
    let code = wait_for(&browser, "#new-code strong.code")
        .await
        .text()
        .await
        .unwrap();
    assert!(!code.trim().is_empty());
    let invited = text_of(&browser, "#own-proxies").await;
    assert!(invited.contains("招待中"), "{invited}");
    screenshot(&browser, "patient-proxies").await;
    // She signs in at the provider, lands on the proxies page, takes the code up and opens
    // Taro's record, told on every page whose it is.
    let mother = driver.browser().await;
    mother.goto(&format!("{web}/patient/signin")).await.unwrap();
    at_the_provider(&mother, "hanako").await;
    wait_for(&mother, "#accept").await;
    assert_eq!(path_of(&mother).await, "/me/proxies");
    assert!(
        mother.find(Locator::Css("#own-proxies")).await.is_err(),
        "no record of her own here, so no proxies of her own to manage"
    );
    let field = wait_for(&mother, "#code").await;
    field.send_keys(code.trim()).await.unwrap();
    wait_for(&mother, "#accept button")
        .await
        .click()
        .await
        .unwrap();
    done_saying(&mother, "代理を引き受けました").await;
    wait_for(&mother, "#acting li button")
        .await
        .click()
        .await
        .unwrap();
    let banner = wait_for(&mother, "#acting-for").await.text().await.unwrap();
    assert!(banner.contains(TARO), "{banner}");
    let timeline = wait_for(&mother, "#timeline").await.text().await.unwrap();
    assert!(timeline.contains("調剤"), "{timeline}");
    // Taro revokes her from his screen; her next page opens nothing of his.
    browser.goto(&format!("{web}/me/proxies")).await.unwrap();
    wait_for(&browser, "#own-proxies li[data-status=active] button")
        .await
        .click()
        .await
        .unwrap();
    done_saying(&browser, "代理を取り消しました").await;
    mother.goto(&format!("{web}/me")).await.unwrap();
    wait_for(&mother, ".problem").await;
    assert!(
        mother.find(Locator::Css("#timeline")).await.is_err(),
        "a revoked proxy sees nothing"
    );
    mother.close().await.unwrap();

    // An organization's pages are not a patient's, and a forged revoke does nothing.
    browser.goto(&format!("{web}/pharmacy")).await.unwrap();
    assert!(
        path_of(&browser).await.ends_with("/signin"),
        "a patient session is no organization's"
    );
    browser.close().await.unwrap();
    drop(driver);
    web_service.stop().await;
    flow.stop().await;
}
