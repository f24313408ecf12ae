//! Prescriptions end to end on a real broker: clinic gateway → pharmacy → dispensing back to
//! the clinic view, with the real JP e-prescription examples.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_access::{ApiKey, Directory};
use hixbus_storage::Database;
pub(crate) use hixbus_tests::rx::{as_written, fixture, numbered_bundle, pharmacist};
use hixbus_tests::{Backend, BusStack, Service, fresh_database, start_service};
use serde_json::{Value, json};

const ORGANIZATIONS: &str = r#"
[[organization]]
id = "clinic-sakura"
role = "clinic"
name = "さくら内科クリニック"
institution_code = "1310000001"

[[organization]]
id = "hospital-daiichi"
role = "hospital"
name = "第一病院"
institution_code = "1311234567"

[[organization]]
id = "pharmacy-aozora"
role = "pharmacy"
name = "あおぞら薬局"
institution_code = "1340000007"

[[organization]]
id = "pharmacy-midori"
role = "pharmacy"
name = "みどり薬局"

[[organization]]
id = "insurer-kenpo"
role = "insurer"
name = "サンプル健康保険組合"

[[organization]]
id = "operator-hixbus"
role = "operator"
name = "hixbus 運用チーム"
"#;

/// The flow's services on one real broker, each on its own fresh PostgreSQL database.
/// Services are declared first so they stop before the broker does.
pub(crate) struct Flow {
    pub(crate) gateway_service: Option<Service>,
    pub(crate) pharmacy_service: Option<Service>,
    pub(crate) safety: Option<Service>,
    pub(crate) stack: BusStack,
    pub(crate) gateway: String,
    pub(crate) pharmacy: String,
    pub(crate) directory: Arc<Directory>,
    pub(crate) gateway_db: String,
    pub(crate) pharmacy_db: String,
    pub(crate) keys: HashMap<&'static str, ApiKey>,
    pub(crate) http: reqwest::Client,
}

pub(crate) async fn start_gateway(
    stack: &BusStack,
    directory: &Arc<Directory>,
    db: &str,
) -> (String, Service) {
    start_service(Kind::ClinicGateway, stack, directory, Some(db)).await
}

pub(crate) async fn start_pharmacy(
    stack: &BusStack,
    directory: &Arc<Directory>,
    db: &str,
) -> (String, Service) {
    start_service(Kind::Pharmacy, stack, directory, Some(db)).await
}

/// The medication-safety check, started from scratch: its state is rebuilt from the topics.
pub(crate) async fn start_safety(stack: &BusStack) -> Service {
    let directory = Arc::new(Directory::default());
    start_service(Kind::MedicationSafety, stack, &directory, None)
        .await
        .1
}

impl Flow {
    pub(crate) async fn start() -> Self {
        Self::start_on(Backend::Postgres).await
    }

    /// The flow with the services' databases on `backend` (SQLite: as `hixbus up` runs them).
    pub(crate) async fn start_on(backend: Backend) -> Self {
        Self::start_with(backend, BusStack::start().await).await
    }

    /// The flow on a given stack (one whose Kafka settings a test changed).
    pub(crate) async fn start_with(backend: Backend, stack: BusStack) -> Self {
        let mut directory = Directory::from_toml(ORGANIZATIONS).unwrap();
        let mut keys = HashMap::new();
        for id in [
            "clinic-sakura",
            "hospital-daiichi",
            "pharmacy-aozora",
            "pharmacy-midori",
            "insurer-kenpo",
            "operator-hixbus",
        ] {
            keys.insert(id, directory.issue_key(id).unwrap());
        }
        let directory = Arc::new(directory);
        let gateway_db = fresh_database(backend).await;
        let pharmacy_db = fresh_database(backend).await;
        let (gateway, gateway_service) = start_gateway(&stack, &directory, &gateway_db).await;
        let (pharmacy, pharmacy_service) = start_pharmacy(&stack, &directory, &pharmacy_db).await;
        let safety = Some(start_safety(&stack).await);
        Self {
            gateway_service: Some(gateway_service),
            pharmacy_service: Some(pharmacy_service),
            safety,
            stack,
            gateway,
            pharmacy,
            directory,
            gateway_db,
            pharmacy_db,
            keys,
            http: reqwest::Client::new(),
        }
    }

    /// (organization, action) of every audit entry about `prescription_id`, from both services.
    pub(crate) async fn audit(&self, prescription_id: &str) -> Vec<(String, String)> {
        let mut entries = Vec::new();
        for db in [&self.gateway_db, &self.pharmacy_db] {
            let db = Database::connect(db).await.unwrap();
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT org_id, action FROM audit_log WHERE subject_id = $1 ORDER BY at",
            )
            .bind(prescription_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
            entries.extend(rows);
        }
        entries
    }

    /// Stops every service gracefully while the broker is still up: consumers commit and leave
    /// their groups instead of being torn down with the test's runtime.
    pub(crate) async fn stop(mut self) {
        if let Some(gateway) = self.gateway_service.take() {
            gateway.stop().await;
        }
        if let Some(pharmacy) = self.pharmacy_service.take() {
            pharmacy.stop().await;
        }
        if let Some(safety) = self.safety.take() {
            safety.stop().await;
        }
    }

    /// Stops the gateway (gracefully) and starts a new one on the same database.
    pub(crate) async fn restart_gateway(&mut self) {
        if let Some(old) = self.gateway_service.take() {
            old.stop().await;
        }
        let (url, service) = start_gateway(&self.stack, &self.directory, &self.gateway_db).await;
        self.gateway_service = Some(service);
        self.gateway = url;
    }

    /// A rolling restart of the pharmacy service, as a deployment does it: a new replica on the
    /// same database joins the consumer group, then the old one stops (gracefully) and leaves.
    pub(crate) async fn restart_pharmacy(&mut self) {
        let (url, service) = start_pharmacy(&self.stack, &self.directory, &self.pharmacy_db).await;
        if let Some(old) = self.pharmacy_service.replace(service) {
            old.stop().await;
        }
        self.pharmacy = url;
    }

    /// (status, JSON body) of a call as `org` (None: no credentials).
    pub(crate) async fn call(
        &self,
        org: Option<&str>,
        method: &str,
        url: String,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        // A service that stops answering fails the test rather than hanging it.
        let mut request = self
            .http
            .request(method, url)
            .timeout(Duration::from_secs(30));
        if let Some(org) = org {
            request = request.bearer_auth(self.keys[org].expose());
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn issue(
        &self,
        clinic: &str,
        resource: &Value,
        pharmacy: Option<&str>,
    ) -> (u16, Value) {
        let kind = resource["resourceType"].as_str().unwrap();
        let query = pharmacy.map_or(String::new(), |p| format!("?target_pharmacy={p}"));
        self.call(
            Some(clinic),
            "POST",
            format!("{}/fhir/{kind}{query}", self.gateway),
            Some(resource.clone()),
        )
        .await
    }

    /// Issues `resource` to `pharmacy` and waits until both the pharmacy's inbox and the
    /// clinic's view show it; the prescription id.
    pub(crate) async fn issue_delivered(
        &self,
        clinic: &str,
        resource: &Value,
        pharmacy: &str,
    ) -> String {
        let (status, accepted) = self.issue(clinic, resource, Some(pharmacy)).await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["prescription_id"].as_str().unwrap().to_owned();
        self.in_inbox(pharmacy, &id, |_| true).await;
        self.clinic_sees(clinic, &id, "issued").await;
        id
    }

    /// `pharmacy`'s live inbox (server-sent events) on `base` (a pharmacy replica), as sent.
    pub(crate) async fn inbox_stream_at(&self, base: &str, pharmacy: &str) -> reqwest::Response {
        self.http
            .get(format!("{base}/pharmacy/inbox/stream"))
            .bearer_auth(self.keys[pharmacy].expose())
            .send()
            .await
            .unwrap()
    }

    /// `pharmacy`'s live inbox on the flow's pharmacy service.
    pub(crate) async fn inbox_stream(&self, pharmacy: &str) -> reqwest::Response {
        self.inbox_stream_at(&self.pharmacy, pharmacy).await
    }

    pub(crate) async fn inbox(&self, pharmacy: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                Some(pharmacy),
                "GET",
                format!("{}/pharmacy/inbox", self.pharmacy),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["prescriptions"].as_array().unwrap().clone()
    }

    /// Waits until `pharmacy`'s inbox shows `id` (in the state `ready` accepts).
    pub(crate) async fn in_inbox(
        &self,
        pharmacy: &str,
        id: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let inbox = self.inbox(pharmacy).await;
            if let Some(item) = inbox.into_iter().find(|p| p["prescription_id"] == id)
                && ready(&item)
            {
                return item;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {pharmacy}'s inbox as expected; the inbox: {}",
                Value::Array(self.inbox(pharmacy).await)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the issuing clinic sees `id` with `status`.
    pub(crate) async fn clinic_sees(&self, clinic: &str, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self
                .call(
                    Some(clinic),
                    "GET",
                    format!("{}/clinic/prescriptions/{id}", self.gateway),
                    None,
                )
                .await;
            if code == 200 && body["status"] == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{clinic} never saw {id} as {status}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn dispense(&self, pharmacy: &str, id: &str, body: Value) -> (u16, Value) {
        self.call(
            Some(pharmacy),
            "POST",
            format!("{}/pharmacy/prescriptions/{id}/dispense", self.pharmacy),
            Some(body),
        )
        .await
    }
}

/// The MedicationRequests of a fixture, in order.
pub(crate) fn requests(resource: &Value) -> Vec<Value> {
    match resource["resourceType"].as_str() {
        Some("Bundle") => resource["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .filter(|r| r["resourceType"] == "MedicationRequest")
            .collect(),
        _ => vec![resource.clone()],
    }
}

#[tokio::test]
async fn every_jp_example_reaches_the_target_pharmacy_with_its_drugs_dosage_and_quantity() {
    let flow = Flow::start().await;
    // The two example bundles share their identifier, so each comes from a different issuer
    // (the same identifier from the same issuer would be a resubmission).
    let cases = [
        (
            "hospital-daiichi",
            "Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json",
        ),
        (
            "clinic-sakura",
            "Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json",
        ),
        (
            "clinic-sakura",
            "MedicationRequest-JP-MedReq-ePreData-Example-naihuku.json",
        ),
        (
            "hospital-daiichi",
            "MedicationRequest-JP-MedReq-ePreData-Example-gaiyou03.json",
        ),
    ];
    for (clinic, name) in cases {
        let resource = fixture(name);
        let (status, accepted) = flow.issue(clinic, &resource, Some("pharmacy-aozora")).await;
        assert_eq!(status, 202, "{name}: {accepted}");
        let id = accepted["prescription_id"].as_str().unwrap();
        assert_eq!(accepted["access_code"].as_str().unwrap().len(), 8);

        let item = flow.in_inbox("pharmacy-aozora", id, |_| true).await;
        assert_eq!(item["issuer_org"], clinic, "{name}");
        assert_eq!(item["status"], "issued");
        let lines = item["lines"].as_array().unwrap();
        let expected = requests(&resource);
        assert_eq!(lines.len(), expected.len(), "{name}");
        for (line, request) in lines.iter().zip(&expected) {
            let coding = &request["medicationCodeableConcept"]["coding"][0];
            assert_eq!(line["drug"]["code"], coding["code"], "{name}");
            assert_eq!(line["drug"]["display"], coding["display"], "{name}");
            assert_eq!(
                line["timing_text"], request["dosageInstruction"][0]["text"],
                "{name}"
            );
            let quantity = &request["dispenseRequest"]["quantity"];
            assert_eq!(
                line["quantity"]["value"].as_f64(),
                quantity["value"].as_f64(),
                "{name}"
            );
            assert_eq!(line["quantity"]["unit"], quantity["unit"], "{name}");
            let timing_code =
                &request["dosageInstruction"][0]["timing"]["code"]["coding"][0]["code"];
            if !timing_code.is_null() {
                assert_eq!(line["timing_code"]["code"], *timing_code, "{name}");
            }
        }
    }
    flow.stop().await;
}

#[tokio::test]
async fn dispensing_shows_at_the_clinic_and_a_second_dispense_is_refused() {
    let flow = Flow::start().await;
    let bundle = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    let id = &flow
        .issue_delivered("hospital-daiichi", &bundle, "pharmacy-aozora")
        .await;

    // Line 1 is 変更不可 (no substitution); line 2 may be substituted.
    let mut body = pharmacist();
    body["lines"] = json!([{ "line_no": 1, "substitute": { "system": "urn:oid:1.2.392.200119.4.403.1", "code": "999999999", "display": "後発品" } }]);
    let (status, refused) = flow.dispense("pharmacy-aozora", id, body).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("did not allow substitution")
    );

    let (status, dispensed) = flow.dispense("pharmacy-aozora", id, pharmacist()).await;
    assert_eq!(status, 200, "{dispensed}");
    assert_eq!(dispensed["partial"], false);

    let seen = flow.clinic_sees("hospital-daiichi", id, "dispensed").await;
    assert_eq!(seen["dispensed"]["pharmacy"]["org_id"], "pharmacy-aozora");
    assert_eq!(seen["dispensed"]["lines"].as_array().unwrap().len(), 2);
    assert_eq!(seen["dispensed"]["lines"][0]["drug"]["code"], "103831601");

    let (status, again) = flow.dispense("pharmacy-aozora", id, pharmacist()).await;
    assert_eq!(status, 409, "{again}");
    // The example as written in 2020 has long expired: the gateway refuses to issue it.
    let old = as_written("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    let (status, refused) = flow
        .issue("clinic-sakura", &old, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["issue"][0]["expression"][0], "Composition.date");
    assert!(
        refused["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("expired on 2020-08-24"),
        "{refused}"
    );
    // One that expired while waiting in the inbox (here: issued five days ago, straight onto
    // the bus) is refused at the counter, by the date in Japan.
    let mut stale = hixbus_contracts::samples::prescription_issued("patient:stale", 1);
    stale.envelope.event_id = uuid::Uuid::now_v7().to_string();
    stale.prescription_id = hixbus_tests::unique("rx-stale");
    stale.issuer.org_id = "clinic-sakura".to_owned();
    stale.envelope.producer_org = "clinic-sakura".to_owned();
    stale.target_pharmacy_org = Some("pharmacy-aozora".to_owned());
    let today = hixbus_contracts::lifecycle::today_in_japan();
    stale.issued_on = today.plus_days(-5);
    stale.expires_on = Some(today.plus_days(-2));
    flow.stack.publisher().publish(&stale).await.unwrap();
    flow.in_inbox("pharmacy-aozora", &stale.prescription_id, |_| true)
        .await;
    let (status, expired) = flow
        .dispense("pharmacy-aozora", &stale.prescription_id, pharmacist())
        .await;
    assert_eq!(
        (status, expired["error"].as_str()),
        (409, Some("expired")),
        "{expired}"
    );
    assert_eq!(again["error"], "already_dispensed");
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("already dispensed by pharmacy-aozora")
    );
    let (status, elsewhere) = flow.dispense("pharmacy-midori", id, pharmacist()).await;
    assert_eq!(
        status, 404,
        "another pharmacy cannot even see it: {elsewhere}"
    );

    // Every read and change of the patient's prescription left an audit entry.
    let audit = flow.audit(id).await;
    for expected in [
        ("hospital-daiichi", "prescription.issue"),
        ("hospital-daiichi", "clinic.read"),
        ("pharmacy-aozora", "inbox.read"),
        ("pharmacy-aozora", "dispense"),
    ] {
        assert!(
            audit
                .iter()
                .any(|(org, action)| (org.as_str(), action.as_str()) == expected),
            "{expected:?} missing from {audit:?}"
        );
    }

    let (status, _) = flow
        .call(
            Some("hospital-daiichi"),
            "POST",
            format!("{}/clinic/prescriptions/{id}/cancel", flow.gateway),
            Some(json!({ "reason": "誤り", "cancelled_by": { "id": "doc-1", "name": null, "department": null } })),
        )
        .await;
    assert_eq!(status, 409, "a dispensed prescription cannot be cancelled");
    flow.stop().await;
}

#[tokio::test]
async fn an_open_prescription_is_claimed_with_the_access_code_and_then_only_that_pharmacy_sees_it()
{
    let flow = Flow::start().await;
    let request = fixture("MedicationRequest-JP-MedReq-ePreData-Example-naihuku.json");
    let (status, accepted) = flow.issue("clinic-sakura", &request, None).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["prescription_id"].as_str().unwrap().to_owned();
    let code = accepted["access_code"].as_str().unwrap().to_owned();

    let claim = |pharmacy: &'static str, code: String| {
        let flow = &flow;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let answer = flow
                    .call(
                        Some(pharmacy),
                        "POST",
                        format!("{}/pharmacy/claims", flow.pharmacy),
                        Some(json!({ "access_code": code })),
                    )
                    .await;
                // The prescription reaches the pharmacy service within milliseconds; until
                // then the code is unknown. Claims are rate-limited, so retry gently.
                let wait = match answer.0 {
                    404 => Duration::from_millis(200),
                    429 => Duration::from_secs(3),
                    _ => return answer,
                };
                if Instant::now() > deadline {
                    return answer;
                }
                tokio::time::sleep(wait).await;
            }
        }
    };
    let (status, wrong) = flow
        .call(
            Some("pharmacy-midori"),
            "POST",
            format!("{}/pharmacy/claims", flow.pharmacy),
            Some(json!({ "access_code": "ZZZZZZZZ" })),
        )
        .await;
    assert_eq!(status, 404, "{wrong}");
    let (status, claimed) = claim("pharmacy-midori", code.to_lowercase()).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["claimed"], json!([id]));
    flow.in_inbox("pharmacy-midori", &id, |item| item["status"] == "claimed")
        .await;

    let (status, _) = flow
        .call(
            Some("pharmacy-aozora"),
            "POST",
            format!("{}/pharmacy/claims", flow.pharmacy),
            Some(json!({ "access_code": code })),
        )
        .await;
    assert_eq!(
        status, 404,
        "a claimed prescription cannot be claimed again"
    );
    assert!(
        flow.inbox("pharmacy-aozora")
            .await
            .iter()
            .all(|p| p["prescription_id"] != id.as_str())
    );
    let seen = flow.clinic_sees("clinic-sakura", &id, "claimed").await;
    assert_eq!(seen["claimed_by"], "pharmacy-midori");

    let (status, _) = flow.dispense("pharmacy-midori", &id, pharmacist()).await;
    assert_eq!(status, 200);
    flow.clinic_sees("clinic-sakura", &id, "dispensed").await;
    flow.stop().await;
}

/// Access codes are short enough to read out at a counter; guessing them must be hopeless.
#[tokio::test]
async fn guessing_access_codes_is_cut_off_per_pharmacy() {
    let flow = Flow::start().await;
    let guess = |pharmacy: &'static str, n: usize| {
        flow.call(
            Some(pharmacy),
            "POST",
            format!("{}/pharmacy/claims", flow.pharmacy),
            Some(json!({ "access_code": format!("GUESS{n:03}") })),
        )
    };
    for n in 0..hixbus_pharmacy::claims::FAILURES_PER_MINUTE {
        let (status, body) = guess("pharmacy-aozora", n).await;
        assert_eq!(status, 404, "guess {n}: {body}");
    }
    let response = flow
        .http
        .post(format!("{}/pharmacy/claims", flow.pharmacy))
        .bearer_auth(flow.keys["pharmacy-aozora"].expose())
        .body(json!({ "access_code": "GUESS999" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_many_claims", "{body}");

    // Another pharmacy is not held back by this one.
    let (status, body) = guess("pharmacy-midori", 0).await;
    assert_eq!(status, 404, "{body}");
    flow.stop().await;
}

#[tokio::test]
async fn nobody_sees_or_does_more_than_their_role_and_their_own_prescriptions_allow() {
    let flow = Flow::start().await;
    let bundle = fixture("Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json");
    let id = &flow
        .issue_delivered("clinic-sakura", &bundle, "pharmacy-aozora")
        .await;

    let g = &flow.gateway;
    let p = &flow.pharmacy;
    // Another pharmacy: not in its inbox, not readable, not dispensable.
    assert!(flow.inbox("pharmacy-midori").await.is_empty());
    let (status, body) = flow
        .call(
            Some("pharmacy-midori"),
            "GET",
            format!("{p}/pharmacy/prescriptions/{id}"),
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    // Another clinic: not in its list, not readable, not cancellable.
    let (status, body) = flow
        .call(
            Some("hospital-daiichi"),
            "GET",
            format!("{g}/clinic/prescriptions"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["prescriptions"].as_array().unwrap().is_empty());
    let (status, _) = flow
        .call(
            Some("hospital-daiichi"),
            "GET",
            format!("{g}/clinic/prescriptions/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let cancel =
        json!({ "reason": "x", "cancelled_by": { "id": "d", "name": null, "department": null } });
    let (status, _) = flow
        .call(
            Some("hospital-daiichi"),
            "POST",
            format!("{g}/clinic/prescriptions/{id}/cancel"),
            Some(cancel.clone()),
        )
        .await;
    assert_eq!(status, 404);
    // Roles: pharmacies do not issue, clinics do not dispense or read inboxes, insurers neither.
    let (status, body) = flow.issue("pharmacy-aozora", &bundle, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    for (org, method, url) in [
        ("clinic-sakura", "GET", format!("{p}/pharmacy/inbox")),
        (
            "clinic-sakura",
            "POST",
            format!("{p}/pharmacy/prescriptions/{id}/dispense"),
        ),
        ("insurer-kenpo", "GET", format!("{p}/pharmacy/inbox")),
        ("insurer-kenpo", "GET", format!("{g}/clinic/prescriptions")),
        (
            "pharmacy-aozora",
            "GET",
            format!("{g}/clinic/prescriptions/{id}"),
        ),
    ] {
        let (status, body) = flow
            .call(Some(org), method, url.clone(), Some(pharmacist()))
            .await;
        assert_eq!(status, 403, "{org} {method} {url}: {body}");
        assert!(body["reason"].as_str().unwrap().contains(org));
    }
    // No credentials at all.
    for url in [
        format!("{p}/pharmacy/inbox"),
        format!("{g}/clinic/prescriptions"),
    ] {
        let (status, body) = flow.call(None, "GET", url, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthenticated"))
        );
    }
    // The owner can cancel; then it cannot be dispensed.
    let (status, _) = flow
        .call(
            Some("clinic-sakura"),
            "POST",
            format!("{g}/clinic/prescriptions/{id}/cancel"),
            Some(cancel),
        )
        .await;
    assert_eq!(status, 202);
    flow.in_inbox("pharmacy-aozora", id, |item| item["status"] == "cancelled")
        .await;
    let (status, body) = flow.dispense("pharmacy-aozora", id, pharmacist()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("cancelled")),
        "{body}"
    );
    flow.clinic_sees("clinic-sakura", id, "cancelled").await;
    flow.stop().await;
}

#[tokio::test]
async fn bad_submissions_get_an_operation_outcome_and_a_resubmission_issues_nothing_new() {
    let flow = Flow::start().await;
    let url = format!("{}/fhir/Bundle", flow.gateway);
    let send = |body: String, content_type: &'static str| {
        let request = flow
            .http
            .post(url.clone())
            .bearer_auth(flow.keys["clinic-sakura"].expose())
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
            (status, body)
        }
    };
    let (status, outcome) = send("{not json".to_owned(), "application/fhir+json").await;
    assert_eq!(status, 400);
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (status, _) = send(
        json!({"resourceType": "Patient"}).to_string(),
        "application/fhir+json",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send("{}".to_owned(), "text/plain").await;
    assert_eq!(status, 415);

    let mut bundle = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    for entry in bundle["entry"].as_array_mut().unwrap() {
        if entry["resource"]["resourceType"] == "MedicationRequest" {
            entry["resource"]["dispenseRequest"]
                .as_object_mut()
                .unwrap()
                .remove("quantity");
        }
    }
    let (status, outcome) = send(bundle.to_string(), "application/fhir+json").await;
    assert_eq!(status, 422);
    let issues = outcome["issue"].as_array().unwrap();
    assert_eq!(issues.len(), 2, "one issue per line: {outcome}");
    assert!(issues.iter().all(|i| {
        i["expression"][0]
            .as_str()
            .unwrap()
            .ends_with("dispenseRequest.quantity")
    }));

    // The same bundle twice: one prescription, the same answer, one event on the topic.
    let good = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    let (status, first) = flow
        .issue("clinic-sakura", &good, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 202);
    assert_eq!(first["replayed"], false);
    let (status, second) = flow
        .issue("clinic-sakura", &good, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 202);
    assert_eq!(second["replayed"], true);
    for field in ["prescription_id", "event_id", "access_code"] {
        assert_eq!(first[field], second[field], "{field}");
    }
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
    let mut issued = 0;
    for record in &records {
        if let Ok(Ok(decoded)) = codec.decode(record.payload.as_deref().unwrap()).await
            && let hixbus_contracts::Event::PrescriptionIssued(e) = decoded.event
            && e.prescription_id == first["prescription_id"]
        {
            issued += 1;
        }
    }
    assert_eq!(issued, 1, "a resubmission publishes nothing");
    flow.stop().await;
}

#[tokio::test]
async fn a_pharmacy_screen_updates_live_over_server_sent_events() {
    let flow = Flow::start().await;
    let mut stream = flow.inbox_stream("pharmacy-aozora").await;
    assert_eq!(stream.status().as_u16(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    let request = fixture("MedicationRequest-JP-MedReq-ePreData-Example-gaiyou03.json");
    let (_, accepted) = flow
        .issue("clinic-sakura", &request, Some("pharmacy-aozora"))
        .await;
    let id = accepted["prescription_id"].as_str().unwrap();
    // Another pharmacy's prescription must not appear on this screen.
    let (_, other) = flow
        .issue("hospital-daiichi", &request, Some("pharmacy-midori"))
        .await;
    let other_id = other["prescription_id"].as_str().unwrap();

    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !received.contains(id) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the new prescription is pushed to the screen")
            .unwrap()
            .expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("event: prescription"), "{received}");
    assert!(
        !received.contains(other_id),
        "another pharmacy's prescription leaked: {received}"
    );
    flow.stop().await;
}

/// A screen is connected to whichever pharmacy replica its load balancer chose; it must hear of
/// every change, whichever replica consumed it.
#[tokio::test]
async fn a_screen_on_one_replica_sees_what_another_replica_consumed() {
    let flow = Flow::start().await;
    let (second, second_service) =
        start_pharmacy(&flow.stack, &flow.directory, &flow.pharmacy_db).await;
    let mut stream = flow.inbox_stream_at(&second, "pharmacy-aozora").await;
    assert_eq!(stream.status().as_u16(), 200);

    // Twelve patients: their prescriptions spread over the partitions both replicas share.
    let mut ids = Vec::new();
    for n in 0..12 {
        let (status, accepted) = flow
            .issue(
                "clinic-sakura",
                &numbered_bundle(n),
                Some("pharmacy-aozora"),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["prescription_id"].as_str().unwrap().to_owned());
    }

    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ids.iter().all(|id| received.contains(id.as_str())) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(chunk) = tokio::time::timeout(left, stream.chunk()).await else {
            let missing: Vec<_> = ids
                .iter()
                .filter(|id| !received.contains(id.as_str()))
                .collect();
            panic!("the screen on the second replica never heard of {missing:?}");
        };
        received.push_str(&String::from_utf8_lossy(
            &chunk.unwrap().expect("stream open"),
        ));
    }
    Service::stop(second_service).await;
    flow.stop().await;
}

/// The lines of an alert's JSON, by prescription id.
fn alert_lines(alert: &Value) -> Vec<&str> {
    alert["involved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["prescription_id"].as_str().unwrap())
        .collect()
}

/// The duplicate-ingredient alert beside a prescription, if it has one.
fn duplicate(item: &Value) -> Option<&Value> {
    item["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == "DUPLICATE_INGREDIENT")
}

/// A consent decision of the patient about `grantee`, as the patient service publishes it.
fn consent(
    patient_ref: &str,
    id: &str,
    grantee: &str,
    purpose: hixbus_contracts::PurposeOfUse,
    decision: hixbus_contracts::ConsentDecision,
) -> hixbus_contracts::ConsentChanged {
    hixbus_contracts::ConsentChanged {
        envelope: hixbus_contracts::Envelope::new("patient-portal", patient_ref),
        consent_id: id.to_owned(),
        grantee_org: Some(grantee.to_owned()),
        purpose,
        scope: vec![hixbus_contracts::DataCategory::Prescriptions],
        decision,
        valid_until: None,
    }
}

/// Reads a live inbox until an event of it satisfies `ready`; that event's data.
async fn streamed(
    stream: &mut reqwest::Response,
    buffer: &mut String,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:"))
                && let Ok(item) = serde_json::from_str::<Value>(data.trim())
                && ready(&item)
            {
                return item;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the live inbox never showed the change")
            .unwrap()
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_duplicate_from_a_second_clinic_raises_an_alert_both_sides_see_as_consent_allows_even_after_a_restart()
 {
    use hixbus_contracts::{ConsentDecision, PurposeOfUse};
    let flow = Flow::start().await;
    // Both examples are for the same insured patient and prescribe carbocisteine for 7 days.
    let first = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    let (_, a) = flow
        .issue("hospital-daiichi", &first, Some("pharmacy-aozora"))
        .await;
    let first_id = a["prescription_id"].as_str().unwrap().to_owned();
    flow.in_inbox("pharmacy-aozora", &first_id, |_| true).await;
    let second = fixture("Bundle-Bundle-for-JP-MedReq-ePreData-Example01.json");
    let (_, b) = flow
        .issue("clinic-sakura", &second, Some("pharmacy-midori"))
        .await;
    let second_id = b["prescription_id"].as_str().unwrap().to_owned();
    let patient = a["patient_ref"].as_str().unwrap().to_owned();
    assert_eq!(
        a["patient_ref"], b["patient_ref"],
        "one patient, recognized by insurance card"
    );

    // Without the patient's consent, each side sees that there is a duplicate and its own
    // line of it, not the other institution's prescription: not its drug, id or institution.
    let withheld_except = |own: &str, other: &str, other_org: &str, item: &Value| {
        duplicate(item).is_some_and(|alert| {
            let text = alert.to_string();
            alert_lines(alert) == [own]
                && alert["withheld"]["lines"] == 1
                && !alert["message"]
                    .as_str()
                    .unwrap()
                    .contains("カルボシステイン")
                && !text.contains(other)
                && !text.contains(other_org)
        })
    };
    flow.in_inbox("pharmacy-midori", &second_id, |item| {
        withheld_except(&second_id, &first_id, "hospital-daiichi", item)
    })
    .await;
    flow.in_inbox("pharmacy-aozora", &first_id, |item| {
        withheld_except(&first_id, &second_id, "clinic-sakura", item)
    })
    .await;
    let prescriber_sees = async |clinic: &str, id: &str, ready: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, seen) = flow
                .call(
                    Some(clinic),
                    "GET",
                    format!("{}/clinic/prescriptions/{id}", flow.gateway),
                    None,
                )
                .await;
            if ready(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "{clinic}: {seen}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    prescriber_sees("clinic-sakura", &second_id, &|seen| {
        withheld_except(&second_id, &first_id, "hospital-daiichi", seen)
    })
    .await;
    prescriber_sees("hospital-daiichi", &first_id, &|seen| {
        withheld_except(&first_id, &second_id, "clinic-sakura", seen)
    })
    .await;

    // The patient consents to pharmacy-midori seeing their other prescriptions: its inbox and
    // its open screen show the whole alert within a second; the hospital still sees its side.
    let mut screen = flow.inbox_stream("pharmacy-midori").await;
    assert_eq!(screen.status().as_u16(), 200);
    let mut buffer = String::new();
    let publisher = flow.stack.publisher();
    let whole = |item: &Value| {
        duplicate(item).is_some_and(|alert| {
            alert_lines(alert) == [second_id.as_str(), first_id.as_str()]
                && alert["involved"][1]["issuer_org"] == "hospital-daiichi"
                && alert["message"]
                    .as_str()
                    .unwrap()
                    .contains("カルボシステイン")
                && alert["shown_under"] == "consent:consent-midori"
                && alert["withheld"].is_null()
        })
    };
    let granted = consent(
        &patient,
        "consent-midori",
        "pharmacy-midori",
        PurposeOfUse::Dispensing,
        ConsentDecision::Granted,
    );
    // Timed from the decision being on the bus (the patient service publishes it before it
    // answers the patient).
    publisher.publish(&granted).await.unwrap();
    let at = Instant::now();
    flow.in_inbox("pharmacy-midori", &second_id, whole).await;
    let took = at.elapsed();
    assert!(took < Duration::from_secs(1), "consent took {took:?}");
    streamed(&mut screen, &mut buffer, whole).await;
    prescriber_sees("hospital-daiichi", &first_id, &|seen| {
        withheld_except(&first_id, &second_id, "clinic-sakura", seen)
    })
    .await;
    // A visit consent for the hospital opens its view of the alert the same way.
    let mut visit = consent(
        &patient,
        "consent-daiichi",
        "hospital-daiichi",
        PurposeOfUse::Treatment,
        ConsentDecision::Granted,
    );
    visit.valid_until = Some(hixbus_contracts::Timestamp::from_unix_millis(
        chrono::Utc::now().timestamp_millis() + 24 * 3_600_000,
    ));
    publisher.publish(&visit).await.unwrap();
    prescriber_sees("hospital-daiichi", &first_id, &|seen| {
        duplicate(seen).is_some_and(|alert| {
            alert_lines(alert) == [second_id.as_str(), first_id.as_str()]
                && alert["shown_under"] == "consent:consent-daiichi"
        })
    })
    .await;

    // Revoked: withheld again within a second, in the inbox and on the open screen.
    let revoked = hixbus_contracts::ConsentChanged {
        decision: ConsentDecision::Revoked,
        envelope: hixbus_contracts::Envelope::new("patient-portal", &patient),
        ..granted.clone()
    };
    // Timed from the decision being on the bus (the patient service publishes it before it
    // answers the patient).
    publisher.publish(&revoked).await.unwrap();
    let at = Instant::now();
    flow.in_inbox("pharmacy-midori", &second_id, |item| {
        withheld_except(&second_id, &first_id, "hospital-daiichi", item)
    })
    .await;
    let took = at.elapsed();
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    streamed(&mut screen, &mut buffer, |item| {
        withheld_except(&second_id, &first_id, "hospital-daiichi", item)
    })
    .await;
    drop(screen);
    // A replay of the grant (redelivered, or the topic read again) does not reopen it.
    publisher.publish(&granted).await.unwrap();
    let marker = consent(
        &patient,
        "consent-marker",
        "pharmacy-aozora",
        PurposeOfUse::Treatment,
        ConsentDecision::Granted,
    );
    publisher.publish(&marker).await.unwrap();
    let book =
        hixbus_consent::ConsentBook::new(Database::connect(&flow.pharmacy_db).await.unwrap())
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !book
        .consents(std::slice::from_ref(&patient))
        .await
        .unwrap()
        .iter()
        .any(|c| c.consent_id == "consent-marker")
    {
        assert!(
            Instant::now() < deadline,
            "the marker consent never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let item = flow.in_inbox("pharmacy-midori", &second_id, |_| true).await;
    assert!(
        withheld_except(&second_id, &first_id, "hospital-daiichi", &item),
        "{item}"
    );

    // Every decision about the other institution's side is audited with the policy version.
    let pharmacy_db = Database::connect(&flow.pharmacy_db).await.unwrap();
    let decisions: Vec<(String, String)> = sqlx::query_as(
        "SELECT org_id, subject_id FROM audit_log WHERE action = 'alert.read' AND patient_ref = $1",
    )
    .bind(&patient)
    .fetch_all(&pharmacy_db.pool)
    .await
    .unwrap();
    let policy = hixbus_consent::POLICY_VERSION;
    for expected in [
        format!("policy={policy}; alert="),
        "; shown=consent:consent-midori".to_owned(),
        "; shown=own only; withheld=1".to_owned(),
    ] {
        assert!(
            decisions
                .iter()
                .any(|(org, what)| org == "pharmacy-midori" && what.contains(&expected)),
            "{expected} not in {decisions:?}"
        );
    }

    // The check restarts with no state of its own: it rebuilds the medications from the
    // topics, so a third prescription of the same drug is still checked against the others.
    let mut flow = flow;
    flow.safety.take().unwrap().stop().await;
    flow.safety = Some(start_safety(&flow.stack).await);
    let mut third = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    third["identifier"]["value"] = json!("urn:uuid:5b0e1d6a-3f0c-4c55-9a57-2f7b1f0c9d11");
    let (status, c) = flow
        .issue("hospital-daiichi", &third, Some("pharmacy-aozora"))
        .await;
    assert_eq!(status, 202, "{c}");
    let third_id = c["prescription_id"].as_str().unwrap().to_owned();
    // One alert for the duplicated drug, listing the lines of both earlier prescriptions: the
    // one pharmacy-aozora holds, and the other pharmacy's, withheld without consent.
    let item = flow
        .in_inbox("pharmacy-aozora", &third_id, |item| {
            duplicate(item).is_some_and(|alert| alert_lines(alert).contains(&first_id.as_str()))
        })
        .await;
    let alert = duplicate(&item).unwrap();
    assert_eq!(
        alert_lines(alert),
        [third_id.as_str(), first_id.as_str()],
        "{alert}"
    );
    assert_eq!(
        alert["withheld"]["lines"], 1,
        "checked against both earlier prescriptions after the restart: {alert}"
    );
    flow.stop().await;
}

/// Every prescription `org` has at `list`, paged three at a time with `order=newest`.
async fn newest_first(flow: &Flow, org: &str, list: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = flow
            .call(
                Some(org),
                "GET",
                format!("{list}?order=newest&limit=3&after={after}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        for p in page["prescriptions"].as_array().unwrap() {
            ids.push(p["prescription_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn restarting_the_gateway_and_the_pharmacy_mid_stream_loses_and_duplicates_nothing() {
    let mut flow = Flow::start().await;
    let total = 30;
    let mut issued = Vec::new();
    for n in 0..total {
        if n == 10 {
            flow.restart_pharmacy().await;
        }
        if n == 20 {
            flow.restart_gateway().await;
        }
        let (status, accepted) = flow
            .issue(
                "clinic-sakura",
                &numbered_bundle(n),
                Some("pharmacy-aozora"),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        issued.push(accepted["prescription_id"].as_str().unwrap().to_owned());
    }
    // A resubmission from before the gateway restart is still recognized.
    let (_, again) = flow
        .issue(
            "clinic-sakura",
            &numbered_bundle(5),
            Some("pharmacy-aozora"),
        )
        .await;
    assert_eq!(again["prescription_id"], issued[5].as_str());
    assert_eq!(again["replayed"], true);

    let deadline = Instant::now() + Duration::from_secs(60);
    let inbox = loop {
        let inbox = flow.inbox("pharmacy-aozora").await;
        if inbox.len() >= total || Instant::now() > deadline {
            break inbox;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut seen: Vec<&str> = inbox
        .iter()
        .map(|p| p["prescription_id"].as_str().unwrap())
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<&str> = issued.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "every prescription exactly once in the inbox"
    );
    // The consoles' order: newest first, paged down to the first, each exactly once.
    for (org, list) in [
        (
            "pharmacy-aozora",
            format!("{}/pharmacy/inbox", flow.pharmacy),
        ),
        (
            "clinic-sakura",
            format!("{}/clinic/prescriptions", flow.gateway),
        ),
    ] {
        let mut oldest_first = newest_first(&flow, org, &list).await;
        oldest_first.reverse();
        assert_eq!(oldest_first, expected, "{list}: newest first, each once");
    }

    let (_, list) = flow
        .call(
            Some("clinic-sakura"),
            "GET",
            format!("{}/clinic/prescriptions", flow.gateway),
            None,
        )
        .await;
    assert_eq!(list["prescriptions"].as_array().unwrap().len(), total);
    flow.stop().await;
}

/// Dispensings travel on their own topic, so a replay, a pharmacy system publishing to the bus
/// directly, or a redriven prescription can put one ahead of its prescription. It must wait for
/// the prescription, not be lost: a lost dispensing would let the prescription be dispensed
/// again.
#[tokio::test]
async fn a_dispensing_read_before_its_prescription_waits_for_it_and_is_not_lost() {
    let flow = Flow::start().await;
    let patient = hixbus_tests::unique("patient");
    let publisher = flow.stack.publisher();
    let dispensed = hixbus_contracts::samples::prescription_dispensed(&patient);
    let issued = hixbus_contracts::samples::prescription_issued(&patient, 2);
    let id = issued.prescription_id.clone();
    assert_eq!(dispensed.prescription_id, id);

    publisher.publish(&dispensed).await.unwrap();
    // Long enough for both services to read the dispensing and find nothing to attach it to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher.publish(&issued).await.unwrap();

    let item = flow
        .in_inbox("pharmacy-aozora", &id, |item| item["status"] == "dispensed")
        .await;
    assert_eq!(item["dispensed"]["pharmacist"]["id"], "ph-007", "{item}");
    let seen = flow.clinic_sees("clinic-sakura", &id, "dispensed").await;
    assert_eq!(
        seen["dispensed"]["pharmacy"]["org_id"], "pharmacy-aozora",
        "{seen}"
    );
    let pharmacist = json!({ "pharmacist": { "id": "ph-2", "name": null, "department": null } });
    let (status, refusal) = flow.dispense("pharmacy-aozora", &id, pharmacist).await;
    assert_eq!(status, 409, "{refusal}");
    flow.stop().await;
}

/// What a pharmacy process killed between taking the right to dispense and publishing the
/// event leaves behind: the prescription in `dispensing`, its event unpublished. (The fault
/// suite hit this: 30 prescriptions held in `dispensing` forever after a pharmacy kill.)
async fn begin_without_publishing(flow: &Flow, id: &str) -> String {
    let db = Database::connect(&flow.pharmacy_db).await.unwrap();
    let keys = hixbus_access::codes::CodeKeys::parse(hixbus_tests::code_key(), []).unwrap();
    let store = hixbus_pharmacy::store::Store::new(db, Arc::new(keys))
        .await
        .unwrap();
    let row = store.get(id).await.unwrap().unwrap();
    let mut event = hixbus_contracts::samples::prescription_dispensed(&row.patient_ref);
    event.envelope.event_id = uuid::Uuid::new_v4().to_string();
    event.prescription_id = id.to_owned();
    event.issuer_org = row.issuer_org.clone();
    event.pharmacy.org_id = "pharmacy-aozora".to_owned();
    assert!(
        store
            .begin_dispensing(&event, &row.patient_ref)
            .await
            .unwrap()
    );
    event.envelope.event_id
}

#[tokio::test]
async fn a_dispensing_cut_short_by_a_crash_is_published_by_the_retry_or_at_the_next_start() {
    let mut flow = Flow::start().await;
    let bundle = fixture("Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json");
    let retried = flow
        .issue_delivered("hospital-daiichi", &bundle, "pharmacy-aozora")
        .await;
    let event_id = begin_without_publishing(&flow, &retried).await;

    // The pharmacist's retry publishes the event begun before, not a new one.
    let (status, body) = flow
        .dispense("pharmacy-aozora", &retried, pharmacist())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], event_id.as_str());
    flow.clinic_sees("hospital-daiichi", &retried, "dispensed")
        .await;
    // Once recorded, a further retry is told it is done.
    let (status, _) = flow
        .dispense("pharmacy-aozora", &retried, pharmacist())
        .await;
    assert_eq!(status, 409);

    // Nobody retries: the next start of the pharmacy service publishes it.
    let numbered = numbered_bundle(7);
    let abandoned = flow
        .issue_delivered("clinic-sakura", &numbered, "pharmacy-aozora")
        .await;
    begin_without_publishing(&flow, &abandoned).await;
    flow.restart_pharmacy().await;
    flow.clinic_sees("clinic-sakura", &abandoned, "dispensed")
        .await;
    flow.stop().await;
}

/// A run of dispensings in one statement, on both engines: each prescription here and not yet
/// dispensed is recorded once (even when the run holds its dispensing twice), one dispensed
/// already keeps its first dispensing, one not here yet is left for the one-at-a-time retry, and
/// the answer names exactly those recorded. On PostgreSQL the statement also announces them.
#[tokio::test]
async fn a_run_of_dispensings_is_recorded_in_one_statement_each_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let url = fresh_database(backend).await;
        let db = Database::connect(&url).await.unwrap();
        let keys = hixbus_access::codes::CodeKeys::parse(hixbus_tests::code_key(), []).unwrap();
        let store = hixbus_pharmacy::store::Store::new(db, Arc::new(keys))
            .await
            .unwrap();
        let rx = |n: usize| {
            let mut e = hixbus_contracts::samples::prescription_issued("patient-run", 2);
            e.prescription_id = format!("rx-run-{n}");
            e.target_pharmacy_org = Some("pharmacy-aozora".to_owned());
            e
        };
        let dispensing = |n: usize, by: &str| {
            let mut d = hixbus_contracts::samples::prescription_dispensed("patient-run");
            d.prescription_id = format!("rx-run-{n}");
            d.pharmacy.org_id = by.to_owned();
            d
        };
        let issued: Vec<_> = (0..4).map(rx).collect();
        store.insert_issued_all(&issued, None).await.unwrap();
        assert!(
            store
                .record_dispensed(&dispensing(0, "pharmacy-aozora"))
                .await
                .unwrap()
        );
        // Announcements on PostgreSQL arrive at commit, on the channel given.
        let mut listener = match backend {
            Backend::Postgres => {
                let mut l = sqlx::postgres::PgListener::connect(&url).await.unwrap();
                l.listen("dispensed_run_test").await.unwrap();
                Some(l)
            }
            Backend::Sqlite => None,
        };
        let channel = listener.as_ref().map(|_| "dispensed_run_test");
        let run = vec![
            dispensing(0, "pharmacy-other"),
            dispensing(1, "pharmacy-aozora"),
            dispensing(2, "pharmacy-aozora"),
            dispensing(1, "pharmacy-other"),
            dispensing(9, "pharmacy-aozora"),
            dispensing(3, "pharmacy-aozora"),
        ];
        let mut recorded = store.record_dispensed_all(&run, channel).await.unwrap();
        recorded.sort();
        assert_eq!(
            recorded,
            ["rx-run-1", "rx-run-2", "rx-run-3"],
            "{backend:?}"
        );
        for n in 0..4 {
            let row = store.get(&format!("rx-run-{n}")).await.unwrap().unwrap();
            assert_eq!(
                row.status,
                hixbus_contracts::lifecycle::Status::Dispensed,
                "{backend:?}"
            );
            assert!(row.dispensed.is_some());
        }
        let first = store.get("rx-run-0").await.unwrap().unwrap();
        assert_eq!(
            first.dispensed_by.as_deref(),
            Some("pharmacy-aozora"),
            "the first dispensing is kept"
        );
        let twice = store.get("rx-run-1").await.unwrap().unwrap();
        assert_eq!(
            twice.dispensed_by.as_deref(),
            Some("pharmacy-aozora"),
            "of two in one run, the first is kept"
        );
        assert!(store.get("rx-run-9").await.unwrap().is_none());
        if let Some(listener) = &mut listener {
            let mut heard = Vec::new();
            for _ in 0..3 {
                let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
                    .await
                    .expect("an announcement")
                    .unwrap();
                heard.push(n.payload().to_owned());
            }
            heard.sort();
            assert_eq!(heard, ["rx-run-1", "rx-run-2", "rx-run-3"]);
        }
        assert!(
            store
                .record_dispensed_all(&run, None)
                .await
                .unwrap()
                .is_empty(),
            "applied again, it changes nothing"
        );
        // What the run handler asks of those not recorded: done already, or still to come.
        let mut done: Vec<String> = store
            .dispensed_among(&["rx-run-0", "rx-run-1", "rx-run-9"])
            .await
            .unwrap()
            .into_iter()
            .collect();
        done.sort();
        assert_eq!(done, ["rx-run-0", "rx-run-1"], "{backend:?}");
        let long: Vec<_> = (10..11 + hixbus_pharmacy::store::MAX_RUN_ROWS)
            .map(|n| dispensing(n, "pharmacy-aozora"))
            .collect();
        let refused = store.record_dispensed_all(&long, None).await;
        assert!(
            matches!(
                refused,
                Err(hixbus_pharmacy::store::StoreError::RunTooLong(n)) if n == long.len()
            ),
            "{refused:?}"
        );
        drop(listener);
        hixbus_tests::drop_database(&url).await;
    }
}

/// A run of prescriptions in one statement, on both engines: new ones are recorded (each once,
/// even when the run holds it twice, as a redelivery can), one already there is left as it was,
/// and the answer names exactly the new ones: the prescriptions the screens are told about.
#[tokio::test]
async fn a_run_of_prescriptions_is_recorded_in_one_statement_each_new_one_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let url = fresh_database(backend).await;
        let db = Database::connect(&url).await.unwrap();
        let keys = hixbus_access::codes::CodeKeys::parse(hixbus_tests::code_key(), []).unwrap();
        let store = hixbus_pharmacy::store::Store::new(db, Arc::new(keys))
            .await
            .unwrap();
        let rx = |n: usize| {
            let mut e = hixbus_contracts::samples::prescription_issued("patient-run", 1);
            e.prescription_id = format!("rx-run-{n}");
            e.target_pharmacy_org = Some("pharmacy-aozora".to_owned());
            e
        };
        assert!(store.insert_issued(&rx(0), None).await.unwrap());
        let mut earlier = rx(0);
        earlier.envelope.producer_org = "someone-else".to_owned();
        let run = vec![earlier, rx(1), rx(2), rx(1), rx(3)];
        let mut new = store.insert_issued_all(&run, None).await.unwrap();
        new.sort();
        assert_eq!(new, ["rx-run-1", "rx-run-2", "rx-run-3"], "{backend:?}");
        for n in 0..4 {
            let row = store.get(&format!("rx-run-{n}")).await.unwrap().unwrap();
            assert_eq!(
                row.holder.as_deref(),
                Some("pharmacy-aozora"),
                "{backend:?}"
            );
            assert_eq!(row.status, hixbus_contracts::lifecycle::Status::Issued);
        }
        let first = store.get("rx-run-0").await.unwrap().unwrap();
        assert_ne!(first.issuer_org, "someone-else", "an existing row is kept");
        assert!(
            store
                .insert_issued_all(&run, None)
                .await
                .unwrap()
                .is_empty()
        );
        // More than one statement takes is refused whole, not split or cut.
        let long: Vec<_> = (10..11 + hixbus_pharmacy::store::MAX_RUN_ROWS)
            .map(rx)
            .collect();
        let refused = store.insert_issued_all(&long, None).await;
        assert!(
            matches!(
                refused,
                Err(hixbus_pharmacy::store::StoreError::RunTooLong(n)) if n == long.len()
            ),
            "{refused:?}"
        );
        assert!(store.get("rx-run-10").await.unwrap().is_none());
        hixbus_tests::drop_database(&url).await;
    }
}
