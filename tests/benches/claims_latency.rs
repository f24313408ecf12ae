//! Dispensing to the insurer's decision on the pharmacy's screen, at a steady rate on a real
//! broker.
//!
//!   cargo bench -p hixbus-tests --bench claims_latency
//!
//! Prescriptions for distinct members of the demo insurer are put on the bus first (not
//! timed). Then the pharmacy dispenses them through its API at `HIXBUS_BENCH_RATE` per second
//! (default 200) for `HIXBUS_BENCH_SECONDS` (default 15). Each dispensing is priced into its
//! claim (claims service), delivered to the insurer's own topic after its evidence (insurer
//! delivery), decided (reference insurer), and the decision shown to the pharmacy; the
//! pharmacy's screen is the claims service's live stream (SSE). For each dispensing it records
//! when the dispense call answered and when the decided claim reached the screen. The
//! baseline, in the same run: a bare hixbus consumer of the `dispensations` topic (one bus hop),
//! so the ratio is what four hops and three services add. Target: p99 under 200 ms at 200
//! claims/s on the in-memory broker (`HIXBUS_BENCH_BROKER=mock`). Not a test: numbers go to
//! docs/performance.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_bus::Publisher;
use hixbus_contracts::lifecycle;
use hixbus_contracts::{CodedConcept, Coverage, PrescriptionDispensed, Quantity, samples};
use hixbus_tests::{
    Backend, DEMO_ORGANIZATIONS, bench, directory_with_keys, drop_database, fresh_database,
    start_service_with,
};
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bench::Times;

fn rx_id(n: usize) -> String {
    format!("bench-rx-{n:06}")
}

#[tokio::main]
async fn main() {
    let load = bench::Load::from_env((200, 15), (10, 1));
    let (rate, total) = (load.rate, load.total());
    let (stack, mock) = bench::stack().await;
    println!("broker: {}", bench::broker_name(&stack, &mock));
    let (directory, keys) = directory_with_keys(DEMO_ORGANIZATIONS);
    let pharmacy_key = &keys["pharmacy-aozora"];

    // One member per prescription, so no claim is a duplicate of another.
    let roster = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    let mut csv = String::from(
        "insurer_number,symbol,number,branch,birth_date,valid_from,valid_to,copay_percent\n",
    );
    for n in 0..total {
        csv.push_str(&format!(
            "06123456,bench,{n},00,1970-01-01,2020-04-01,,30\n"
        ));
    }
    std::fs::write(roster.path(), csv).unwrap();
    let roster_path = roster.path().display().to_string();

    let databases: Vec<String> = futures_dbs(4).await;
    let start = |kind, db: &str, settings: Vec<(&'static str, String)>| {
        let (stack, directory) = (&stack, &directory);
        let db = db.to_owned();
        async move {
            let settings: Vec<(&str, &str)> =
                settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
            start_service_with(kind, stack, directory, Some(&db), &settings).await
        }
    };
    let (pharmacy_url, pharmacy) = start(Kind::Pharmacy, &databases[0], vec![]).await;
    let (claims_url, claims) = start(Kind::Claims, &databases[1], vec![]).await;
    let (_, delivery) = start(Kind::InsurerFeed, &databases[2], vec![]).await;
    let (_, insurer) = start(
        Kind::Insurer,
        &databases[3],
        vec![
            ("insurer", "insurer-kenpo".to_owned()),
            ("roster", roster_path),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // The prescriptions, straight onto the bus (not timed): the drug of the e-prescription
    // examples, priced by the built-in table.
    let publisher = Publisher::new(&stack.kafka, stack.codec()).unwrap();
    let today = lifecycle::today_in_japan();
    for n in 0..total + 10 {
        let patient = format!("jp-insured:06123456:bench:{n}:00");
        let mut rx = samples::prescription_issued(&patient, 1);
        rx.envelope.event_id = uuid::Uuid::new_v4().to_string();
        rx.prescription_id = rx_id(n);
        rx.issued_on = today;
        rx.expires_on = Some(today.plus_days(3));
        rx.lines[0].drug = CodedConcept::new(
            "urn:oid:1.2.392.200119.4.403.1",
            "103831601",
            Some("カルボシステイン錠２５０ｍｇ"),
        );
        rx.lines[0].quantity = Quantity::new(21.0, "錠");
        rx.coverage = Some(Coverage {
            symbol: Some("bench".to_owned()),
            number: n.to_string(),
            branch: Some("00".to_owned()),
            public_programs: Vec::new(),
            ..samples::coverage()
        });
        publisher.publish(&rx).await.unwrap();
    }
    // Until the pharmacy has the last one.
    let last = rx_id(total + 9);
    hixbus_tests::rx::until_pharmacy_has(
        &http,
        (&pharmacy_url, pharmacy_key),
        &last,
        Duration::from_secs(120),
        Duration::from_millis(200),
    )
    .await;

    // The baseline: a bare consumer of the dispensings, in its own group.
    let stop = hixbus_service::CancellationToken::new();
    let (consumed, baseline) =
        bench::first_seen(&stack, |e: PrescriptionDispensed| e.prescription_id, &stop);

    // The pharmacy's screen: the first decided `claim` event of each dispensing.
    let on_screen: Times = Arc::default();
    let outcomes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut stream = http
        .get(format!("{claims_url}/claims/stream"))
        .bearer_auth(pharmacy_key)
        .send()
        .await
        .unwrap();
    {
        let (on_screen, outcomes) = (on_screen.clone(), outcomes.clone());
        tokio::spawn(async move {
            let mut pending = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    let data = event.lines().find_map(|l| l.strip_prefix("data:"));
                    let Some(item) = data.and_then(|d| serde_json::from_str::<Value>(d).ok())
                    else {
                        continue;
                    };
                    if item["decision"].is_null() {
                        continue;
                    }
                    let Some(rx) = item["claim"]["prescription_id"].as_str() else {
                        continue;
                    };
                    if on_screen
                        .lock()
                        .unwrap()
                        .insert(rx.to_owned(), now)
                        .is_none()
                    {
                        let status = item["status"].as_str().unwrap_or("?").to_owned();
                        *outcomes.lock().unwrap().entry(status).or_default() += 1;
                    }
                }
            }
        });
    }

    // Warm up (connections, consumer groups) before the clock matters.
    for n in total..total + 10 {
        dispense(&http, &pharmacy_url, pharmacy_key, &rx_id(n)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let answered: Times = Arc::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(load.interval());
    let mut requests = Vec::with_capacity(total);
    for n in 0..total {
        ticker.tick().await;
        let (http, url, key, answered) = (
            http.clone(),
            pharmacy_url.clone(),
            pharmacy_key.to_owned(),
            answered.clone(),
        );
        requests.push(tokio::spawn(async move {
            let id = rx_id(n);
            dispense(&http, &url, &key, &id).await;
            answered.lock().unwrap().insert(id, Instant::now());
        }));
    }
    for r in requests {
        r.await.unwrap();
    }
    let offered = started.elapsed();
    bench::wait_for_all(&answered, &on_screen, Duration::from_secs(120)).await;
    let (screen, missing) = bench::lags(&answered, &on_screen);
    let (bus, _) = bench::lags(&answered, &consumed);
    println!(
        "{} dispensings at {rate}/s over {:.1} s; {missing} decisions never reached the screen; outcomes {:?}",
        answered.lock().unwrap().len(),
        offered.as_secs_f64(),
        outcomes.lock().unwrap()
    );
    println!();
    let screen = bench::percentiles(screen);
    let bus = bench::percentiles(bus);
    bench::table(
        "Dispense answered to …",
        &[
            ("a bare consumer of `dispensations` (baseline)", bus),
            ("the decision on the pharmacy's screen (SSE)", screen),
        ],
    );
    println!(
        "screen / baseline: p50 {:.2}, p99 {:.2}; p99 within the 200 ms target: {}",
        screen[0] / bus[0].max(0.001),
        screen[2] / bus[2].max(0.001),
        screen[2] < 200.0
    );
    stop.cancel();
    let _ = baseline.await;
    for service in [pharmacy, claims, delivery, insurer] {
        service.stop().await;
    }
    for url in &databases {
        drop_database(url).await;
    }
    assert_eq!(
        missing, 0,
        "every dispensing's decision reaches the pharmacy"
    );
}

async fn futures_dbs(n: usize) -> Vec<String> {
    let mut dbs = Vec::with_capacity(n);
    for _ in 0..n {
        dbs.push(fresh_database(Backend::Postgres).await);
    }
    dbs
}

async fn dispense(http: &reqwest::Client, pharmacy: &str, key: &str, id: &str) {
    let answer = http
        .post(format!("{pharmacy}/pharmacy/prescriptions/{id}/dispense"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(r#"{"pharmacist":{"id":"ph-bench"}}"#)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert!(status.is_success(), "{id}: {status} {body}");
}
