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
        flow.start_patient(&directory, &db, hixbus_patient::GROUP)
            .await;
        flow
    }

    async fn start_patient(
        &mut self,
        directory: &Arc<hixbus_access::Directory>,
        db: &str,
        group: &str,
    ) {
        let (url, service) = start_service_with(
            Kind::Patient,
            &self.stack,
            directory,
            Some(db),
            &[
                ("oidc_issuer", self.issuer.issuer()),
                ("oidc_audience", DEMO_AUDIENCE),
                ("consumer_group", group),
            ],
        )
        .await;
        self.patient_service = Some(service);
        self.urls.insert(Kind::Patient, url);
        self.databases.insert(Kind::Patient, db.to_owned());
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
    let mut flow = Flow::start().await;

    // Prescriptions from a hospital and a clinic, both dispensed (one line as a generic).
    let substituted = flow
        .issue(
            "hospital-daiichi",
            "Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json",
            "patient-rx-1",
        )
        .await;
    let as_prescribed = flow
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
    flow.dispense(&substituted, body).await;
    flow.dispense(&as_prescribed, pharmacist()).await;

    // A laboratory's result under its own id of the patient, linked by insurance afterwards.
    let (status, ack) = {
        let answer = flow
            .http
            .post(flow.url(Kind::LabGateway, "/hl7v2"))
            .bearer_auth(&flow.keys["lab-kensa"])
            .header("content-type", "application/hl7-v2")
            .body(SSMIX2.as_bytes().to_vec())
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    assert_eq!(status, 200, "{ack}");
    assert!(ack.contains("MSA|AA|"), "{ack}");
    let (status, linked) = flow
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

    // Rebuilt from the topics into an empty database, the record is the same.
    let before_rebuild = record_of(&flow.databases[&Kind::Patient]).await;
    let fresh = fresh_database(Backend::Postgres).await;
    flow.patient_service.take().unwrap().stop().await;
    let directory = Arc::new(
        hixbus_access::Directory::from_toml(&format!("{DEMO_ORGANIZATIONS}\n{TORO}")).unwrap(),
    );
    flow.start_patient(&directory, &fresh, "hixbus-patient-rebuild")
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rebuilt = record_of(&fresh).await;
        if rebuilt == before_rebuild {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuilt record differs:\n{rebuilt:#?}\nwas\n{before_rebuild:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    flow.stop().await;
}

/// Taro's record in the patient service's database `db`: the timeline items and the export's
/// resources (no audit entries: those are the service's own, not rebuilt from the topics).
async fn record_of(db: &str) -> Value {
    let store =
        hixbus_patient::store::Store::new(hixbus_storage::Database::connect(db).await.unwrap())
            .await
            .unwrap();
    let refs = store.refs(TARO).await.unwrap();
    let record = store.record(&refs).await.unwrap();
    let mut bundle = hixbus_patient::export::bundle(TARO, &record, &[]);
    bundle["timestamp"] = Value::Null;
    json!({
        "timeline": record.iter().map(hixbus_patient::record::item).collect::<Vec<_>>(),
        "export": bundle,
    })
}
