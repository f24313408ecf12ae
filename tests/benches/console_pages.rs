//! How long a console's first page takes with 10,000 records behind it.
//!
//!   cargo bench -p hixbus-tests --bench console_pages
//!
//! `HIXBUS_BENCH_RECORDS` (default 10,000) prescriptions from clinic-sakura to pharmacy-aozora
//! are put on the bus and read into the pharmacy's inbox and the clinic's view (not timed).
//! Then, one request at a time, `HIXBUS_BENCH_REQUESTS` (default 100) times each: the pharmacy
//! console's first page (`GET /pharmacy`) and the clinic console's (`GET /clinic`), as a
//! signed-in browser asks for them, and as the baseline in the same run the API call behind
//! each (the newest 50 prescriptions, as JSON, with the organization's key). Measured at the
//! client on loopback, so it is the server's time plus a local round trip. Target (issue 14):
//! under 100 ms. Not a test: numbers go to docs/performance.md.

use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_contracts::samples;
use hixbus_tests::{
    Backend, DEMO_ORGANIZATIONS, bench, directory_with_keys, drop_database, fresh_database,
    start_service_with,
};

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
    println!("broker: {}", bench::broker_name(&mock));
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
    let (web, web_service) = start_service_with(
        Kind::Web,
        &stack,
        &directory,
        None,
        &[
            ("clinic_gateway_url", gateway.as_str()),
            ("pharmacy_url", pharmacy.as_str()),
        ],
    )
    .await;

    // The records behind the pages, through the bus as clinics send them.
    let publisher = stack.publisher();
    let started = Instant::now();
    let mut newest = String::new();
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
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Both read models hold them all once the newest is in each (a topic is read in order).
    let deadline = Instant::now() + Duration::from_secs(600);
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
    println!(
        "{records} prescriptions in the pharmacy's inbox and the clinic's view in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let pharmacist = sign_in(&http, &web, &keys["pharmacy-aozora"]).await;
    let clinic = sign_in(&http, &web, &keys["clinic-sakura"]).await;
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
    let rows = [
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
    ];
    println!("{records} records behind each page, {requests} requests each, one at a time:");
    bench::table("Request", &rows);
    let p50 = |s: &[f64]| bench::percentiles(s.to_vec())[0];
    println!(
        "console / API at p50: pharmacy {:.2}, clinic {:.2}",
        p50(&pharmacy_page) / p50(&pharmacy_api),
        p50(&clinic_page) / p50(&clinic_api)
    );

    web_service.stop().await;
    gateway_service.stop().await;
    pharmacy_service.stop().await;
    drop_database(&pharmacy_db).await;
    drop_database(&gateway_db).await;
    drop(mock);
}
