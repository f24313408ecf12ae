//! The hostile corpus: requests a careless or hostile client sends to every endpoint of the
//! prescription flow, each with the answer it must get. Used by the end-to-end suite (against
//! the services on a real broker and PostgreSQL) and by the `hostile` binary (against
//! `hixbus up`, whose memory the smoke test watches meanwhile).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

/// Where the services are and who may call them.
#[derive(Debug, Clone)]
pub struct Target {
    pub gateway: String,
    pub pharmacy: String,
    /// A registry that requires an operator for changes (as `hixbus up` runs it); `None` skips
    /// the registry's cases.
    pub registry: Option<String>,
    pub clinic_key: String,
    pub pharmacy_key: String,
    pub other_pharmacy_key: String,
    /// A prescription of another clinic, in another pharmacy's inbox.
    pub foreign_prescription: Option<String>,
}

/// One request and the answers it may get.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub expect: &'static [u16],
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: usize,
    /// Answered 429 or 503 with `Retry-After` and a JSON body: shed by admission under load,
    /// nothing taken (a right answer to any request).
    pub shed: usize,
    pub failures: Vec<String>,
}

fn bearer(key: &str) -> (String, String) {
    ("authorization".to_owned(), format!("Bearer {key}"))
}

fn json_type() -> (String, String) {
    ("content-type".to_owned(), "application/json".to_owned())
}

fn fhir_type() -> (String, String) {
    (
        "content-type".to_owned(),
        "application/fhir+json".to_owned(),
    )
}

struct Builder {
    cases: Vec<Case>,
}

impl Builder {
    fn add(
        &mut self,
        name: &str,
        method: Method,
        url: String,
        headers: Vec<(String, String)>,
        body: impl Into<Vec<u8>>,
        expect: &'static [u16],
    ) {
        self.cases.push(Case {
            name: name.to_owned(),
            method,
            url,
            headers,
            body: body.into(),
            expect,
        });
    }
}

fn deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every case for `t`.
pub fn corpus(t: &Target) -> Vec<Case> {
    let mut b = Builder { cases: Vec::new() };
    let (g, p) = (&t.gateway, &t.pharmacy);
    let clinic = bearer(&t.clinic_key);
    let pharmacy = bearer(&t.pharmacy_key);
    let other = bearer(&t.other_pharmacy_key);
    let big = vec![b'x'; 3 * 1024 * 1024];
    let bundle = format!("{g}/fhir/Bundle?target_pharmacy=pharmacy-aozora");

    // Authentication and roles, on every endpoint.
    let endpoints = [
        (Method::POST, format!("{g}/fhir/Bundle")),
        (Method::POST, format!("{g}/fhir/MedicationRequest")),
        (Method::GET, format!("{g}/clinic/prescriptions")),
        (Method::GET, format!("{g}/clinic/prescriptions/rx-1")),
        (
            Method::POST,
            format!("{g}/clinic/prescriptions/rx-1/cancel"),
        ),
        (Method::GET, format!("{p}/pharmacy/inbox")),
        (Method::GET, format!("{p}/pharmacy/inbox/stream")),
        (Method::POST, format!("{p}/pharmacy/claims")),
        (Method::GET, format!("{p}/pharmacy/prescriptions/rx-1")),
        (
            Method::POST,
            format!("{p}/pharmacy/prescriptions/rx-1/dispense"),
        ),
    ];
    for (method, url) in &endpoints {
        b.add(
            "no credentials",
            method.clone(),
            url.clone(),
            vec![],
            "",
            &[401],
        );
        for auth in [
            "Bearer hxb_0000",
            "Bearer ",
            "Basic !!!",
            "Basic Y2xpbmljLXNha3VyYTp3cm9uZw==",
            "Token abc",
            "Bearer \u{7f}",
        ] {
            b.add(
                "bad credentials",
                method.clone(),
                url.clone(),
                vec![("authorization".to_owned(), auth.replace('\u{7f}', "x"))],
                "",
                &[401],
            );
        }
        let wrong_role = if url.starts_with(g.as_str()) {
            pharmacy.clone()
        } else {
            clinic.clone()
        };
        b.add(
            "wrong role",
            method.clone(),
            url.clone(),
            vec![wrong_role, json_type()],
            "{}",
            &[403],
        );
    }

    // The FHIR endpoints.
    for (name, headers, body, expect) in [
        ("no content type", vec![clinic.clone()], b"{}".to_vec(), &[415u16][..]),
        (
            "text/plain",
            vec![clinic.clone(), ("content-type".into(), "text/plain".into())],
            b"{}".to_vec(),
            &[415],
        ),
        ("empty body", vec![clinic.clone(), fhir_type()], vec![], &[400]),
        ("not JSON", vec![clinic.clone(), fhir_type()], b"<Bundle/>".to_vec(), &[400]),
        ("a JSON array", vec![clinic.clone(), fhir_type()], b"[1,2,3]".to_vec(), &[400]),
        ("a JSON string", vec![clinic.clone(), fhir_type()], b"\"Bundle\"".to_vec(), &[400]),
        (
            "an empty Bundle",
            vec![clinic.clone(), fhir_type()],
            br#"{"resourceType":"Bundle"}"#.to_vec(),
            &[422],
        ),
        (
            "another resource",
            vec![clinic.clone(), fhir_type()],
            br#"{"resourceType":"Patient","id":"x"}"#.to_vec(),
            &[400],
        ),
        (
            "nested 10,000 deep",
            vec![clinic.clone(), fhir_type()],
            deep(10_000).into_bytes(),
            &[400],
        ),
        (
            "a number beyond f64",
            vec![clinic.clone(), fhir_type()],
            br#"{"resourceType":"Bundle","n":1e400}"#.to_vec(),
            &[400],
        ),
        (
            "invalid UTF-8",
            vec![clinic.clone(), fhir_type()],
            b"{\"resourceType\":\"Bundle\",\"x\":\"\xff\xfe\"}".to_vec(),
            &[400],
        ),
        ("3 MB", vec![clinic.clone(), fhir_type()], big.clone(), &[413]),
        (
            "a control character",
            vec![clinic.clone(), fhir_type()],
            br#"{"resourceType":"Bundle","type":"document","identifier":{"value":"a\u001b"}}"#
                .to_vec(),
            &[422],
        ),
        (
            "10,000 entries",
            vec![clinic.clone(), fhir_type()],
            json!({"resourceType": "Bundle", "type": "document", "entry": vec![json!({"resource": {"resourceType": "Basic"}}); 10_000]})
                .to_string()
                .into_bytes(),
            &[422],
        ),
    ] {
        b.add(name, Method::POST, bundle.clone(), headers, body, expect);
    }
    for query in [
        "?target_pharmacy=pharmacy-nowhere",
        "?target_pharmacy=clinic-sakura",
        "?target_pharmacy=a&target_pharmacy=b",
        "?unknown=1",
        "?target_pharmacy=%ff%fe",
    ] {
        b.add(
            "a bad query",
            Method::POST,
            format!("{g}/fhir/Bundle{query}"),
            vec![clinic.clone(), fhir_type()],
            br#"{"resourceType":"Bundle"}"#.to_vec(),
            &[400, 422],
        );
    }
    b.add(
        "a MedicationRequest without anything",
        Method::POST,
        format!("{g}/fhir/MedicationRequest"),
        vec![clinic.clone(), fhir_type()],
        br#"{"resourceType":"MedicationRequest"}"#.to_vec(),
        &[422],
    );

    // The clinic view.
    for query in [
        "?limit=0",
        "?limit=100000",
        "?limit=-1",
        "?limit=abc",
        "?after=%00",
        "?x=1",
    ] {
        b.add(
            "a bad page",
            Method::GET,
            format!("{g}/clinic/prescriptions{query}"),
            vec![clinic.clone()],
            "",
            &[400],
        );
    }
    let long_id = "r".repeat(10_000);
    for id in [
        "rx-nothing",
        "..%2F..%2Fetc%2Fpasswd",
        "%00",
        long_id.as_str(),
        "' OR 1=1 --",
    ] {
        b.add(
            "someone else's or no prescription",
            Method::GET,
            format!("{g}/clinic/prescriptions/{id}"),
            vec![clinic.clone()],
            "",
            &[400, 404],
        );
    }
    if let Some(foreign) = &t.foreign_prescription {
        b.add(
            "another clinic's prescription",
            Method::GET,
            format!("{g}/clinic/prescriptions/{foreign}"),
            vec![clinic.clone()],
            "",
            &[404],
        );
    }
    let cancel = format!("{g}/clinic/prescriptions/rx-nothing/cancel");
    for (name, headers, body, expect) in [
        ("cancel: text/plain", vec![clinic.clone(), ("content-type".into(), "text/plain".into())], "{}".to_owned(), &[415u16][..]),
        ("cancel: not JSON", vec![clinic.clone(), json_type()], "reason".to_owned(), &[400]),
        ("cancel: unknown field", vec![clinic.clone(), json_type()], r#"{"reason":"x","cancelled_by":{"id":"d","name":null,"department":null},"force":true}"#.to_owned(), &[400]),
        ("cancel: no reason", vec![clinic.clone(), json_type()], r#"{"reason":"  ","cancelled_by":{"id":"d","name":null,"department":null}}"#.to_owned(), &[422]),
        ("cancel: an escape in the reason", vec![clinic.clone(), json_type()], r#"{"reason":"\u001b[2J","cancelled_by":{"id":"d","name":null,"department":null}}"#.to_owned(), &[422]),
        ("cancel: nobody's prescription", vec![clinic.clone(), json_type()], r#"{"reason":"x","cancelled_by":{"id":"d","name":null,"department":null}}"#.to_owned(), &[404]),
    ] {
        b.add(name, Method::POST, cancel.clone(), headers, body, expect);
    }

    // The pharmacy.
    for query in ["?limit=0", "?limit=501", "?after=%1b", "?bogus=1"] {
        b.add(
            "a bad inbox page",
            Method::GET,
            format!("{p}/pharmacy/inbox{query}"),
            vec![pharmacy.clone()],
            "",
            &[400],
        );
    }
    let claims = format!("{p}/pharmacy/claims");
    for (name, headers, body, expect) in [
        (
            "claim: text/plain",
            vec![
                pharmacy.clone(),
                ("content-type".into(), "text/plain".into()),
            ],
            r#"{"access_code":"AAAA2222"}"#.as_bytes().to_vec(),
            &[415u16, 429][..],
        ),
        (
            "claim: a number",
            vec![pharmacy.clone(), json_type()],
            br#"{"access_code":12345678}"#.to_vec(),
            &[400, 429],
        ),
        (
            "claim: unknown field",
            vec![pharmacy.clone(), json_type()],
            br#"{"access_code":"A","all":true}"#.to_vec(),
            &[400, 429],
        ),
        (
            "claim: a NUL",
            vec![pharmacy.clone(), json_type()],
            br#"{"access_code":"AB\u0000"}"#.to_vec(),
            &[422, 429],
        ),
        (
            "claim: 3 MB",
            vec![pharmacy.clone(), json_type()],
            big.clone(),
            &[413, 429],
        ),
        (
            "claim: a wrong code",
            vec![other.clone(), json_type()],
            br#"{"access_code":"ZZZZZZZZ"}"#.to_vec(),
            &[404, 429],
        ),
    ] {
        b.add(name, Method::POST, claims.clone(), headers, body, expect);
    }
    let dispense = |id: &str| format!("{p}/pharmacy/prescriptions/{id}/dispense");
    let pharmacist = r#"{"pharmacist":{"id":"ph","name":null,"department":null}}"#;
    for (name, headers, body, expect) in [
        (
            "dispense: text/plain",
            vec![
                pharmacy.clone(),
                ("content-type".into(), "text/plain".into()),
            ],
            pharmacist.to_owned(),
            &[415u16][..],
        ),
        (
            "dispense: not JSON",
            vec![pharmacy.clone(), json_type()],
            "dispense!".to_owned(),
            &[400],
        ),
        (
            "dispense: unknown field",
            vec![pharmacy.clone(), json_type()],
            r#"{"pharmacist":{"id":"ph","name":null,"department":null},"free":1}"#.to_owned(),
            &[400],
        ),
        (
            "dispense: no pharmacist id",
            vec![pharmacy.clone(), json_type()],
            r#"{"pharmacist":{"id":" ","name":null,"department":null}}"#.to_owned(),
            &[422],
        ),
        (
            "dispense: a bidi override",
            vec![pharmacy.clone(), json_type()],
            r#"{"pharmacist":{"id":"ph","name":"\u202e","department":null}}"#.to_owned(),
            &[422],
        ),
        (
            "dispense: nobody's prescription",
            vec![pharmacy.clone(), json_type()],
            pharmacist.to_owned(),
            &[404],
        ),
    ] {
        b.add(
            name,
            Method::POST,
            dispense("rx-nothing"),
            headers,
            body,
            expect,
        );
    }
    if let Some(foreign) = &t.foreign_prescription {
        for (method, url, body) in [
            (
                Method::GET,
                format!("{p}/pharmacy/prescriptions/{foreign}"),
                "",
            ),
            (Method::POST, dispense(foreign), pharmacist),
        ] {
            b.add(
                "another pharmacy's prescription",
                method,
                url,
                vec![pharmacy.clone(), json_type()],
                body,
                &[404],
            );
        }
    }

    // Paths and methods nobody serves.
    for (method, url) in [
        (Method::GET, format!("{g}/admin")),
        (Method::DELETE, format!("{g}/fhir/Bundle")),
        (Method::PUT, format!("{p}/pharmacy/inbox")),
        (Method::GET, format!("{p}/../../etc/passwd")),
    ] {
        b.add(
            "no such route",
            method,
            url,
            vec![clinic.clone()],
            "",
            &[404, 405],
        );
    }

    // The registry: reads are open in the dev stack, changes need the operator.
    if let Some(r) = &t.registry {
        for (method, path, body) in [
            (Method::PUT, "/config", r#"{"compatibility":"NONE"}"#),
            (
                Method::DELETE,
                "/subjects/prescriptions-hixbus.events.PrescriptionIssued",
                "",
            ),
            (
                Method::DELETE,
                "/subjects/prescriptions-hixbus.events.PrescriptionIssued?permanent=true",
                "",
            ),
            (
                Method::POST,
                "/subjects/evil-value/versions",
                r#"{"schema":"\"string\""}"#,
            ),
            (
                Method::PUT,
                "/config/prescriptions-hixbus.events.PrescriptionIssued",
                r#"{"compatibility":"NONE"}"#,
            ),
        ] {
            b.add(
                "registry change without the operator",
                method.clone(),
                format!("{r}{path}"),
                vec![(
                    "content-type".to_owned(),
                    "application/vnd.schemaregistry.v1+json".to_owned(),
                )],
                body,
                &[401],
            );
            b.add(
                "registry change by a pharmacy",
                method,
                format!("{r}{path}"),
                vec![
                    (
                        "content-type".to_owned(),
                        "application/vnd.schemaregistry.v1+json".to_owned(),
                    ),
                    ("authorization".to_owned(), {
                        use base64::Engine as _;
                        let pair = format!("pharmacy-aozora:{}", t.pharmacy_key);
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(pair)
                        )
                    }),
                ],
                body,
                &[403],
            );
        }
    }
    b.cases
}

/// Sends every case (`concurrency` at a time) and checks each answer: an expected status,
/// a JSON body for every refusal.
pub async fn run(cases: &[Case], concurrency: usize) -> Outcome {
    hixbus_contracts::registry::install_tls_provider();
    // A fresh connection per request: a server closes a connection whose request body it did
    // not read (a refused upload), and a pooled client can pick such a connection just as it
    // closes.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for case in cases {
        let case = case.clone();
        let (client, semaphore) = (client.clone(), semaphore.clone());
        tasks.spawn(async move {
            let _slot = semaphore.acquire_owned().await.expect("semaphore");
            check(&client, &case).await
        });
    }
    let mut outcome = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        outcome.requests += 1;
        match done.expect("a hostile request") {
            Answer::Expected => {}
            Answer::Shed => outcome.shed += 1,
            Answer::Wrong(failure) => outcome.failures.push(failure),
        }
    }
    // Shedding some is right under load; shedding most would hide every other answer.
    if outcome.shed * 10 > outcome.requests {
        outcome.failures.push(format!(
            "{} of {} requests were shed: the corpus did not test what it sends",
            outcome.shed, outcome.requests
        ));
    }
    outcome
}

/// How a hostile request was answered.
enum Answer {
    Expected,
    /// 429 or 503 with `Retry-After` and a JSON body where something else was expected: shed by
    /// admission under load, nothing taken.
    Shed,
    Wrong(String),
}

/// Sends `case` and judges the answer.
async fn check(client: &reqwest::Client, case: &Case) -> Answer {
    let mut request = client.request(case.method.clone(), &case.url);
    for (name, value) in &case.headers {
        request = request.header(name, value);
    }
    let response = match request.body(case.body.clone()).send().await {
        Ok(response) => response,
        // Refusing an oversized upload, the server may answer and close before the client has
        // finished sending it; the client then sees the connection reset instead of the 413.
        Err(_) if case.expect.contains(&413) && case.body.len() > 1024 * 1024 => {
            return Answer::Expected;
        }
        Err(e) => return Answer::Wrong(format!("{} {}: no answer: {e}", case.method, case.name)),
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let retry_after = response.headers().contains_key("retry-after");
    let body = response.bytes().await.unwrap_or_default();
    if !case.expect.contains(&status)
        && matches!(status, 429 | 503)
        && retry_after
        && serde_json::from_slice::<Value>(&body).is_ok()
    {
        return Answer::Shed;
    }
    if !case.expect.contains(&status) {
        let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Answer::Wrong(format!(
            "{} {} ({}): {status}, expected {:?}: {shown}",
            case.method,
            case.name,
            case.url.chars().take(100).collect::<String>(),
            case.expect
        ));
    }
    if status >= 400
        && (!content_type.contains("json") || serde_json::from_slice::<Value>(&body).is_err())
    {
        return Answer::Wrong(format!(
            "{} {}: {status} without a JSON body ({content_type})",
            case.method, case.name
        ));
    }
    Answer::Expected
}
