//! Specific health checkups end to end on a real broker: the official 特定健診 report Bundle
//! POSTed to the lab gateway becomes one `CheckupCompleted`, which reaches the patient's insurer
//! (named by the Coverage) with every one of its 44 observations, and no other insurer.

use std::collections::HashMap;

use std::time::{Duration, Instant};

use hixbus::stack::Kind;

use hixbus_tests::{
    Backend, BusStack, Service, directory_with_keys, fresh_database, start_service,
};
use serde_json::{Value, json};

const ORGANIZATIONS: &str = r#"
[[organization]]
id = "hospital-daiichi"
role = "hospital"
name = "厚生労働省第一病院"
institution_code = "1311234567"

[[organization]]
id = "insurer-kenpo"
role = "insurer"
name = "サンプル健康保険組合"
institution_code = "06123456"

[[organization]]
id = "insurer-kokuho"
role = "insurer"
name = "さくら市国民健康保険"
institution_code = "138016"

[[organization]]
id = "lab-kensa"
role = "lab"
name = "検査センター"

[[organization]]
id = "pharmacy-aozora"
role = "pharmacy"
name = "あおぞら薬局"
"#;

const SAMPLE: &str =
    include_str!("../fixtures/fhir/jp-echeckup/Bundle-Bundle-eCheckupReport-Sample-01.json");

struct Flow {
    _stack: BusStack,
    gateway: Service,
    feed: Service,
    gateway_url: String,
    feed_url: String,
    keys: HashMap<String, String>,
    http: reqwest::Client,
}

impl Flow {
    async fn start() -> Self {
        let stack = BusStack::start().await;
        let (directory, keys) = directory_with_keys(ORGANIZATIONS);
        let gateway_db = fresh_database(Backend::Sqlite).await;
        let feed_db = fresh_database(Backend::Postgres).await;
        let (gateway_url, gateway) =
            start_service(Kind::LabGateway, &stack, &directory, Some(&gateway_db)).await;
        let (feed_url, feed) =
            start_service(Kind::InsurerFeed, &stack, &directory, Some(&feed_db)).await;
        Self {
            _stack: stack,
            gateway,
            feed,
            gateway_url,
            feed_url,
            keys,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, org: &str, body: &Value) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}/fhir/Bundle", self.gateway_url))
            .bearer_auth(&self.keys[org])
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    async fn feed(&self, insurer: &str, after: i64) -> Value {
        let answer = self
            .http
            .get(format!("{}/insurer/feed?after={after}", self.feed_url))
            .bearer_auth(&self.keys[insurer])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json().await.unwrap()
    }

    /// Waits until `insurer`'s feed holds `count` entries; the feed.
    async fn feed_of(&self, insurer: &str, count: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let feed = self.feed(insurer, 0).await;
            if feed["entries"].as_array().unwrap().len() >= count {
                return feed;
            }
            assert!(Instant::now() < deadline, "{insurer}'s feed: {feed}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.feed.stop().await;
    }
}

/// The sample with another document identifier: another checkup.
fn another(identifier: &str) -> Value {
    let mut body: Value = serde_json::from_str(SAMPLE).unwrap();
    body["identifier"]["value"] = json!(identifier);
    body
}

/// Reads server-sent events from where the last call stopped until `count` more have come;
/// their (id, data).
async fn events(stream: &mut reqwest::Response, count: usize) -> Vec<(String, Value)> {
    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parsed: Vec<(String, Value)> = received
            .split("\n\n")
            .filter_map(|block| {
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                Some((id?, data?))
            })
            .collect();
        if parsed.len() >= count {
            return parsed;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("{count} events expected: {received}"))
            .unwrap()
            .expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_checkup_reaches_the_patients_insurer_with_all_44_observations_and_no_other_insurer() {
    let flow = Flow::start().await;
    let sample: Value = serde_json::from_str(SAMPLE).unwrap();
    let (status, accepted) = flow.send("hospital-daiichi", &sample).await;
    assert_eq!(status, 201, "{accepted}");
    assert_eq!(accepted["insurer"]["org_id"], "insurer-kenpo");
    assert_eq!(
        accepted["patient_ref"],
        "jp-insured:06123456:12345:67890:01"
    );

    let feed = flow.feed_of("insurer-kenpo", 1).await;
    let entry = &feed["entries"][0];
    assert_eq!(entry["cursor"], 1);
    assert_eq!(entry["kind"], "checkup");
    let checkup = &entry["checkup"];
    assert_eq!(checkup["checkup_type"], "SPECIFIC_HEALTH_CHECKUP");
    assert_eq!(checkup["performed_by"]["org_id"], "hospital-daiichi");
    assert_eq!(checkup["metabolic_syndrome"]["display"], "非該当");
    assert_eq!(checkup["guidance_level"]["display"], "なし");

    // Every Observation of the source, field by field: items by code with value and unit,
    // questionnaire answers by question with the answer's code.
    let items = checkup["items"].as_array().unwrap();
    let answers = checkup["questionnaire"].as_array().unwrap();
    assert_eq!(items.len() + answers.len(), 44);
    let sources: Vec<&Value> = sample["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Observation")
        .collect();
    assert_eq!(sources.len(), 44);
    for source in sources {
        let coding = &source["code"]["coding"][0];
        let code = coding["code"].as_str().unwrap();
        let answer = answers.iter().find(|a| a["question"]["code"] == code);
        let item = items.iter().find(|i| i["code"]["code"] == code);
        match (item, answer) {
            (Some(item), None) => {
                assert_eq!(item["code"]["system"], coding["system"], "{code}");
                assert_eq!(item["code"]["display"], coding["display"], "{code}");
                if let Some(q) = source.get("valueQuantity") {
                    assert_eq!(
                        item["value_numeric"].as_f64(),
                        q["value"].as_f64(),
                        "{code}"
                    );
                    assert_eq!(item["unit"], q["unit"], "{code}");
                }
                if let Some(c) = source.get("valueCodeableConcept") {
                    assert_eq!(
                        item["value_coded"]["code"], c["coding"][0]["code"],
                        "{code}"
                    );
                }
                if let Some(s) = source.get("valueString") {
                    assert_eq!(&item["value_text"], s, "{code}");
                }
            }
            (None, Some(answer)) => {
                assert_eq!(answer["question"]["display"], coding["display"], "{code}");
                let sent = &source["valueCodeableConcept"]["coding"][0];
                assert_eq!(answer["answer_coded"]["code"], sent["code"], "{code}");
                assert_eq!(answer["answer_coded"]["system"], sent["system"], "{code}");
            }
            other => panic!("{code}: expected once, as an item or an answer: {other:?}"),
        }
    }

    // The same request again (a lost answer) is the same checkup: one entry, not two.
    let (status, again) = flow.send("hospital-daiichi", &sample).await;
    assert_eq!(status, 201);
    assert_eq!(again["event_id"], accepted["event_id"]);

    // A live reader gets the next checkup with its cursor as the event id, and one that
    // reconnects with Last-Event-ID resumes after it: nothing missed, nothing twice.
    let mut stream = flow
        .http
        .get(format!("{}/insurer/feed/stream", flow.feed_url))
        .bearer_auth(&flow.keys["insurer-kenpo"])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = events(&mut stream, 1).await;
    assert_eq!(first[0].0, "1");
    flow.send("hospital-daiichi", &another("checkup-2")).await;
    let second = events(&mut stream, 1).await;
    assert_eq!(second[0].0, "2");
    assert_eq!(second[0].1["checkup"]["checkup_id"], "checkup-2");
    drop(stream);
    flow.send("hospital-daiichi", &another("checkup-3")).await;
    let mut resumed = flow
        .http
        .get(format!("{}/insurer/feed/stream", flow.feed_url))
        .bearer_auth(&flow.keys["insurer-kenpo"])
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    let next = events(&mut resumed, 1).await;
    assert_eq!(next[0].0, "3", "resumes after the last event it had");
    assert_eq!(next[0].1["checkup"]["checkup_id"], "checkup-3");
    let page = flow.feed("insurer-kenpo", 0).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    assert_eq!(page["next"], 3);
    assert_eq!(flow.feed("insurer-kenpo", 3).await["entries"], json!([]));
    // Newest first, as the insurer console reads it: two, then the one before them, then none.
    let newest = |query: &'static str| {
        flow.http
            .get(format!(
                "{}/insurer/feed?order=newest&limit=2{query}",
                flow.feed_url
            ))
            .bearer_auth(&flow.keys["insurer-kenpo"])
            .send()
    };
    let first: Value = newest("").await.unwrap().json().await.unwrap();
    let cursors = |page: &Value| -> Vec<i64> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cursor"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(cursors(&first), [3, 2]);
    assert_eq!(first["next"], 2);
    let second: Value = newest("&before=2").await.unwrap().json().await.unwrap();
    assert_eq!(cursors(&second), [1]);
    assert_eq!(
        second["next"],
        Value::Null,
        "nothing before the first entry"
    );

    // The other insurer sees nothing of it, on its feed or its stream.
    assert_eq!(flow.feed("insurer-kokuho", 0).await["entries"], json!([]));
    let mut other = flow
        .http
        .get(format!("{}/insurer/feed/stream", flow.feed_url))
        .bearer_auth(&flow.keys["insurer-kokuho"])
        .send()
        .await
        .unwrap();
    flow.send("hospital-daiichi", &another("checkup-4")).await;
    flow.feed_of("insurer-kenpo", 4).await;
    if let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(Duration::from_millis(500), other.chunk()).await
    {
        assert!(
            !String::from_utf8_lossy(&chunk).contains("checkup"),
            "another insurer heard of it"
        );
    }
    // Nobody but an insurer reads a feed.
    for org in ["hospital-daiichi", "pharmacy-aozora"] {
        let answer = flow
            .http
            .get(format!("{}/insurer/feed", flow.feed_url))
            .bearer_auth(&flow.keys[org])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{org}");
    }

    // Refused, with the reason: a checkup without its Coverage (no insurer to send it to); a
    // laboratory or a pharmacy does not send checkups.
    let mut uninsured: Value = serde_json::from_str(SAMPLE).unwrap();
    uninsured["identifier"]["value"] = json!("uninsured");
    uninsured["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["resource"]["resourceType"] != "Coverage");
    let (status, outcome) = flow.send("hospital-daiichi", &uninsured).await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    for org in ["lab-kensa", "pharmacy-aozora"] {
        let (status, _) = flow.send(org, &another("not-theirs")).await;
        assert_eq!(status, 403, "{org}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        flow.feed("insurer-kenpo", 0).await["entries"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "nothing refused reached the insurer"
    );
    flow.stop().await;
}
