//! How long a console's first page takes with 10,000 records behind it.
//!
//!   cargo bench -p hixbus-tests --bench console_pages
//!
//! `HIXBUS_BENCH_RECORDS` (default 10,000) prescriptions from clinic-sakura to pharmacy-aozora
//! are put on the bus and read into the pharmacy's inbox and the clinic's view (not timed).
//! Then, one request at a time, `HIXBUS_BENCH_REQUESTS` (default 100) times each: the pharmacy
//! console's first page (`GET /pharmacy`) and the clinic console's (`GET /clinic`), as a
//! signed-in browser asks for them, and as the baseline in the same run the API call behind
//! each (the newest 50 prescriptions, as JSON, with the organization's key). Then the operator
//! console's overview (`GET /operator`), which shows the topics holding those records, against
//! the operator API's `GET /ops/overview`; the insurer console's (`GET /insurer`) with as many
//! checkups and as many prescriptions' evidence on insurer-kenpo's feed, against the feed's
//! newest 50; and the patient portal's
//! record (`GET /me`) with as many prescriptions in Taro's record, signed in through a demo
//! provider, against the patient API's newest 50 entries. Measured at the
//! client on loopback, so it is the server's time plus a local round trip. Target (issue 14):
//! under 100 ms. Not a test: numbers go to docs/performance.md.

use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_contracts::samples;
use hixbus_patient::demo::{DEMO_AUDIENCE, DemoIssuer};
use hixbus_tests::{
    Backend, DEMO_ORGANIZATIONS, bench, directory_with_keys, drop_database, fresh_database,
    start_service_with,
};
use serde_json::{Value, json};

/// The e-prescription examples' patient, as his insurance card names him.
const TARO: &str = "jp-insured:06123456:12345:67890:01";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Signs in at the console as a browser does; the session cookie.
async fn sign_in(http: &reqwest::Client, web: &str, key: &str) -> String {
    let page = http.get(format!("{web}/signin")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let signed = http
        .post(format!("{web}/signin"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("csrf", &csrf)
                .append_pair("api_key", key)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303, "signed in");
    signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The `name=value` of every cookie `response` sets, joined as a `Cookie` header sends them,
/// after those of `jar` it replaces.
fn keep_cookies(jar: &str, response: &reqwest::Response) -> String {
    let mut cookies: Vec<(String, String)> = jar
        .split("; ")
        .filter_map(|c| c.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for set in response.headers().get_all("set-cookie") {
        let pair = set.to_str().unwrap().split(';').next().unwrap();
        if let Some((name, value)) = pair.split_once('=') {
            cookies.retain(|(k, _)| k != name);
            cookies.push((name.to_owned(), value.to_owned()));
        }
    }
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Signs a patient in at the portal through the demo provider's code flow, as a browser does
/// (redirects followed by hand); the portal's cookies.
async fn patient_sign_in(http: &reqwest::Client, web: &str, subject: &str) -> String {
    let leave = http
        .get(format!("{web}/patient/signin"))
        .send()
        .await
        .unwrap();
    let jar = keep_cookies("", &leave);
    let authorize = leave.headers()["location"].to_str().unwrap().to_owned();
    let (endpoint, query) = authorize.split_once('?').unwrap();
    let back = http
        .post(endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{query}&subject={subject}"))
        .send()
        .await
        .unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let landed = http
        .get(&callback)
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.headers()["location"], "/me", "signed in");
    keep_cookies(&jar, &landed)
}

/// Milliseconds of each of `n` sequential GETs of `url` with `header`; each must answer 200
/// and contain `expect`.
async fn timed(
    http: &reqwest::Client,
    url: &str,
    header: (&str, &str),
    n: usize,
    expect: &str,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http
            .get(url)
            .header(header.0, header.1)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let body = response.text().await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(body.contains(expect), "{url} shows {expect}");
    }
    samples
}

#[tokio::main]
async fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let records = env("HIXBUS_BENCH_RECORDS", if smoke { 200 } else { 10_000 });
    let requests = env("HIXBUS_BENCH_REQUESTS", if smoke { 5 } else { 100 });
    if smoke {
        println!("smoke run (no --bench): the numbers below mean nothing");
    }
    let (stack, mock) = bench::stack().await;
    println!("broker: {}", bench::broker_name(&stack, &mock));
    let (directory, keys) = directory_with_keys(DEMO_ORGANIZATIONS);
    let pharmacy_db = fresh_database(Backend::Postgres).await;
    let gateway_db = fresh_database(Backend::Postgres).await;
    let (pharmacy, pharmacy_service) =
        start_service_with(Kind::Pharmacy, &stack, &directory, Some(&pharmacy_db), &[]).await;
    let (gateway, gateway_service) = start_service_with(
        Kind::ClinicGateway,
        &stack,
        &directory,
        Some(&gateway_db),
        &[],
    )
    .await;
    let ops_db = fresh_database(Backend::Postgres).await;
    let (ops, ops_service) = start_service_with(
        Kind::Ops,
        &stack,
        &directory,
        Some(&ops_db),
        &[
            ("sample_secs", "1"),
            ("groups", "hixbus-pharmacy,hixbus-clinic-gateway"),
        ],
    )
    .await;
    // The insurer's side: its delivery and its decisions.
    let feed_db = fresh_database(Backend::Postgres).await;
    let insurer_db = fresh_database(Backend::Postgres).await;
    let (feed, feed_service) =
        start_service_with(Kind::InsurerFeed, &stack, &directory, Some(&feed_db), &[]).await;
    let roster = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/insurers/insurer-kenpo.roster.csv"
    );
    let (insurer, insurer_service) = start_service_with(
        Kind::Insurer,
        &stack,
        &directory,
        Some(&insurer_db),
        &[("insurer", "insurer-kenpo"), ("roster", roster)],
    )
    .await;
    // The patient's side: the record, signed in at a demo provider.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = std::sync::Arc::new(
        DemoIssuer::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap(),
    );
    let stop_issuer = hixbus_service::CancellationToken::new();
    tokio::spawn(issuer.clone().serve(listener, stop_issuer.clone()));
    // The patient service starts last, after the other consoles are measured: it keeps every
    // patient's access trail from the `audit` topic, and the reads measured above write
    // thousands of audit rows it would be writing meanwhile.
    let patient_listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let patient = format!("http://{patient_listen}");
    let (web, web_service) = start_service_with(
        Kind::Web,
        &stack,
        &directory,
        None,
        &[
            ("clinic_gateway_url", gateway.as_str()),
            ("pharmacy_url", pharmacy.as_str()),
            ("ops_url", ops.as_str()),
            ("insurer_feed_url", feed.as_str()),
            ("insurer_url", insurer.as_str()),
            ("patient_url", patient.as_str()),
            ("oidc_issuer", issuer.issuer()),
            ("oidc_audience", DEMO_AUDIENCE),
        ],
    )
    .await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The records behind the pages, through the bus as clinics send them.
    let publisher = stack.publisher();
    let started = Instant::now();
    let mut newest = String::new();
    for n in 0..records {
        let mut checkup = samples::checkup_completed(&format!("patient:member-{n:05}"));
        checkup.envelope.event_id = uuid::Uuid::now_v7().to_string();
        checkup.checkup_id = format!("chk-{}", uuid::Uuid::now_v7().simple());
        publisher.publish(&checkup).await.unwrap();
        let mut own = samples::prescription_issued(TARO, 2);
        // Without insurance on them: the insurer's feed holds the checkups and the evidence of
        // the pharmacy's prescriptions, one entry each.
        own.coverage = None;
        // From another hospital, to no pharmacy yet: the clinic's and the pharmacy's pages
        // hold the prescriptions above alone.
        own.issuer.org_id = "hospital-daiichi".to_owned();
        own.envelope.producer_org = "hospital-daiichi".to_owned();
        own.target_pharmacy_org = None;
        own.envelope.event_id = uuid::Uuid::now_v7().to_string();
        own.prescription_id = format!("rx-taro-{}", uuid::Uuid::now_v7().simple());
        publisher.publish(&own).await.unwrap();
    }
    for n in 0..records {
        let mut rx = samples::prescription_issued(&format!("patient:page-{n:05}"), 3);
        rx.envelope.event_id = uuid::Uuid::now_v7().to_string();
        rx.prescription_id = format!("rx-{}", uuid::Uuid::now_v7().simple());
        rx.issuer.org_id = "clinic-sakura".to_owned();
        rx.envelope.producer_org = "clinic-sakura".to_owned();
        rx.target_pharmacy_org = Some("pharmacy-aozora".to_owned());
        newest = rx.prescription_id.clone();
        publisher.publish(&rx).await.unwrap();
    }
    // Every read model holds them all once the newest is in each (a topic is read in order).
    let deadline = Instant::now() + Duration::from_secs(if smoke { 60 } else { 600 });
    for (url, key) in [
        (
            format!("{pharmacy}/pharmacy/prescriptions/{newest}"),
            &keys["pharmacy-aozora"],
        ),
        (
            format!("{gateway}/clinic/prescriptions/{newest}"),
            &keys["clinic-sakura"],
        ),
    ] {
        while http
            .get(&url)
            .bearer_auth(key)
            .send()
            .await
            .map(|r| r.status())
            .ok()
            != Some(reqwest::StatusCode::OK)
        {
            assert!(Instant::now() < deadline, "{url} never answered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The insurer's feed holds every checkup and every prescription's evidence once its newest
    // cursor is their count (entries are numbered from 1, in the order they arrive).
    loop {
        let page: Value = http
            .get(format!("{feed}/insurer/feed?order=newest&limit=1"))
            .bearer_auth(&keys["insurer-kenpo"])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if page["entries"][0]["cursor"].as_u64().unwrap_or(0) >= 2 * records as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the insurer's feed never got {records} checkups and as many evidence entries: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{records} prescriptions in the pharmacy's inbox and the clinic's view, {records} checkups in the insurer's feed, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let pharmacist = sign_in(&http, &web, &keys["pharmacy-aozora"]).await;
    let clinic = sign_in(&http, &web, &keys["clinic-sakura"]).await;
    let operator = sign_in(&http, &web, &keys["hixbus-operator"]).await;
    let kenpo = sign_in(&http, &web, &keys["insurer-kenpo"]).await;
    // The operator's overview shows the records once the API's background look has seen them.
    let seen = format!("<td class=\"num\">{records}</td>");
    while !http
        .get(format!("{web}/operator"))
        .header("cookie", &operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains(&seen)
    {
        assert!(
            Instant::now() < deadline,
            "the operator console never showed {records} records"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bearer = |org: &str| format!("Bearer {}", keys[org]);
    // Warm both paths (connections, caches) before measuring.
    timed(
        &http,
        &format!("{web}/pharmacy"),
        ("cookie", &pharmacist),
        3,
        &newest,
    )
    .await;
    timed(
        &http,
        &format!("{web}/clinic"),
        ("cookie", &clinic),
        3,
        &newest,
    )
    .await;

    let pharmacy_api = timed(
        &http,
        &format!("{pharmacy}/pharmacy/inbox?limit=50&order=newest"),
        ("authorization", &bearer("pharmacy-aozora")),
        requests,
        &newest,
    )
    .await;
    let pharmacy_page = timed(
        &http,
        &format!("{web}/pharmacy"),
        ("cookie", &pharmacist),
        requests,
        &newest,
    )
    .await;
    let clinic_api = timed(
        &http,
        &format!("{gateway}/clinic/prescriptions?limit=50&order=newest"),
        ("authorization", &bearer("clinic-sakura")),
        requests,
        &newest,
    )
    .await;
    let clinic_page = timed(
        &http,
        &format!("{web}/clinic"),
        ("cookie", &clinic),
        requests,
        &newest,
    )
    .await;
    let ops_api = timed(
        &http,
        &format!("{ops}/ops/overview"),
        ("authorization", &bearer("hixbus-operator")),
        requests,
        "prescriptions",
    )
    .await;
    let operator_page = timed(
        &http,
        &format!("{web}/operator"),
        ("cookie", &operator),
        requests,
        &seen,
    )
    .await;
    let insurer_api = timed(
        &http,
        &format!("{feed}/insurer/feed?order=newest&limit=50"),
        ("authorization", &bearer("insurer-kenpo")),
        requests,
        "\"entries\":[{",
    )
    .await;
    let insurer_page = timed(
        &http,
        &format!("{web}/insurer"),
        ("cookie", &kenpo),
        requests,
        "id=\"claims\"",
    )
    .await;
    // The organizations' consoles, measured without the patient service's trail keeping:
    // printed now, as the portal's catch-up below takes minutes at full size.
    println!("{records} records behind each page, {requests} requests each, one at a time");
    bench::table(
        "Request (organizations' consoles)",
        &[
            (
                "pharmacy API, newest 50 (baseline)",
                bench::percentiles(pharmacy_api.clone()),
            ),
            (
                "pharmacy console, first page",
                bench::percentiles(pharmacy_page.clone()),
            ),
            (
                "clinic API, newest 50 (baseline)",
                bench::percentiles(clinic_api.clone()),
            ),
            (
                "clinic console, first page",
                bench::percentiles(clinic_page.clone()),
            ),
            (
                "operator API, overview (baseline)",
                bench::percentiles(ops_api.clone()),
            ),
            (
                "operator console, overview",
                bench::percentiles(operator_page.clone()),
            ),
            (
                "insurer feed API, newest 50 (baseline)",
                bench::percentiles(insurer_api.clone()),
            ),
            (
                "insurer console, first page",
                bench::percentiles(insurer_page.clone()),
            ),
        ],
    );
    // The portal: the patient service reads every topic from the start, Taro enrols, and his
    // record holds his prescriptions.
    let started = Instant::now();
    let patient_db = fresh_database(Backend::Postgres).await;
    let (_, patient_service) = start_service_with(
        Kind::Patient,
        &stack,
        &directory,
        Some(&patient_db),
        &[
            ("listen", patient_listen.as_str()),
            ("oidc_issuer", issuer.issuer()),
            ("oidc_audience", DEMO_AUDIENCE),
        ],
    )
    .await;
    // Taro enrols with the code his clinic gives him, so his record is his to open.
    let card = json!({"insurance": {"insurer": "06123456", "symbol": "12345", "number": "67890", "branch": "01"}});
    let code: Value = http
        .post(format!("{patient}/patient/enrolment-codes"))
        .bearer_auth(&keys["clinic-sakura"])
        .json(&card)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let taro_token = issuer.id_token("bench-taro", DEMO_AUDIENCE, Duration::from_secs(3600));
    let enrolled = http
        .post(format!("{patient}/patient/enrol"))
        .bearer_auth(&taro_token)
        .json(&json!({"code": code["code"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), 200, "enrolled: {code}");

    let deadline = Instant::now() + Duration::from_secs(if smoke { 60 } else { 600 });
    let record_db = hixbus_storage::Database::connect(&patient_db)
        .await
        .unwrap();
    loop {
        let kept: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM record_entries WHERE patient_ref = $1 AND kind = 'prescription'",
        )
        .bind(TARO)
        .fetch_one(&record_db.pool)
        .await
        .unwrap();
        if kept >= records as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Taro's record has {kept} of {records} prescriptions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{records} entries in Taro's record in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let taro = patient_sign_in(&http, &web, "bench-taro").await;
    let taro_auth = format!("Bearer {taro_token}");
    let patient_api = timed(
        &http,
        &format!("{patient}/patient/timeline?limit=50"),
        ("authorization", &taro_auth),
        requests,
        "prescription",
    )
    .await;
    let patient_page = timed(
        &http,
        &format!("{web}/me"),
        ("cookie", &taro),
        requests,
        "id=\"timeline\"",
    )
    .await;
    let rows = [
        (
            "patient API, timeline newest 50 (baseline)",
            bench::percentiles(patient_api.clone()),
        ),
        (
            "patient portal, record",
            bench::percentiles(patient_page.clone()),
        ),
    ];
    println!("{records} records behind each page, {requests} requests each, one at a time");
    bench::table("Request (the portal)", &rows);
    let p50 = |s: &[f64]| bench::percentiles(s.to_vec())[0];
    println!(
        "console / API at p50: pharmacy {:.2}, clinic {:.2}, operator {:.2}, insurer {:.2}, patient {:.2}",
        p50(&pharmacy_page) / p50(&pharmacy_api),
        p50(&clinic_page) / p50(&clinic_api),
        p50(&operator_page) / p50(&ops_api),
        p50(&insurer_page) / p50(&insurer_api),
        p50(&patient_page) / p50(&patient_api)
    );

    web_service.stop().await;
    ops_service.stop().await;
    patient_service.stop().await;
    insurer_service.stop().await;
    feed_service.stop().await;
    stop_issuer.cancel();
    for db in [&ops_db, &patient_db, &insurer_db, &feed_db] {
        drop_database(db).await;
    }
    gateway_service.stop().await;
    pharmacy_service.stop().await;
    drop_database(&pharmacy_db).await;
    drop_database(&gateway_db).await;
    drop(mock);
}
