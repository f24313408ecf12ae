//! Lab ACK to the ordering clinic's screen, for critical values, at a steady rate on a real
//! broker.
//!
//!   cargo bench -p hixbus-tests --bench critical_latency
//!
//! A laboratory POSTs SS-MIX2 messages (HL7 v2) with a critically high result to the lab gateway
//! at `HIXBUS_BENCH_RATE` per second (default 20) for `HIXBUS_BENCH_SECONDS` (default 15); the
//! ordering hospital's screen is the results inbox's live stream (SSE). For each report it
//! records when the ACK (`MSA|AA`) came back and when the `critical` event reached the screen,
//! and prints percentiles. The baseline, in the same run: a bare hixbus consumer of the
//! `lab-results` topic (decode and nothing else), so the ratio is what the inbox adds to the bus
//! hop (its database write, the change feed, the audit of the delivery, SSE). The target is a
//! critical value on the screen within one second of the ACK (docs/labs.md). Not a test:
//! numbers go to docs/performance.md.
//!
//! `HIXBUS_BENCH_BROKER=mock` runs on librdkafka's in-memory mock cluster (the broker of
//! `hixbus up`) instead of Tansu, whose fetches wait out `fetch.wait.max.ms` even when data is
//! there (docs/performance.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hixbus::stack::Kind;

use hixbus_contracts::LabResultReported;
use hixbus_tests::{
    Backend, bench, directory_with_keys, drop_database, fresh_database, start_service,
};
use serde_json::Value;

const MESSAGE: &str = include_str!("../fixtures/hl7v2/SSMIX2-OUL-R22-utf8.hl7");
const ORGANIZATIONS: &str = r#"
[[organization]]
id = "lab-kensa"
role = "lab"
name = "検査センター"

[[organization]]
id = "hospital-daiichi"
role = "hospital"
name = "第一病院"
"#;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bench::Times;

#[tokio::main]
async fn main() {
    let load = bench::Load::from_env((20, 15), (5, 1));
    let (rate, total) = (load.rate, load.total());
    let (stack, mock) = bench::stack().await;
    println!("broker: {}", bench::broker_name(&stack, &mock));
    let (directory, keys) = directory_with_keys(ORGANIZATIONS);
    let (lab_key, hospital_key) = (&keys["lab-kensa"], &keys["hospital-daiichi"]);
    let databases = [
        fresh_database(Backend::Postgres).await,
        fresh_database(Backend::Postgres).await,
    ];
    let (lab_url, lab) =
        start_service(Kind::LabGateway, &stack, &directory, Some(&databases[0])).await;
    let (clinic_url, clinic) =
        start_service(Kind::ClinicGateway, &stack, &directory, Some(&databases[1])).await;
    let http = reqwest::Client::new();

    // The baseline: a bare consumer of the topic, in its own group.
    let stop = hixbus_service::CancellationToken::new();
    let (consumed, baseline) = bench::first_seen(&stack, |e: LabResultReported| e.report_id, &stop);

    // The hospital's screen: the first `critical` event of each report.
    let on_screen: Times = Arc::default();
    let mut stream = http
        .get(format!("{clinic_url}/clinic/results/stream"))
        .bearer_auth(hospital_key)
        .send()
        .await
        .unwrap();
    {
        let on_screen = on_screen.clone();
        tokio::spawn(async move {
            let mut pending = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    if !event.lines().any(|l| l == "event: critical") {
                        continue;
                    }
                    let data = event.lines().find_map(|l| l.strip_prefix("data:"));
                    let item: Option<Value> = data.and_then(|d| serde_json::from_str(d).ok());
                    if let Some(id) = item.as_ref().and_then(|i| i["report_id"].as_str()) {
                        on_screen
                            .lock()
                            .unwrap()
                            .entry(id.to_owned())
                            .or_insert(now);
                    }
                }
            }
        });
    }

    // Warm up (connections, consumer groups) before the clock matters.
    for n in 0..10 {
        send(&http, &lab_url, lab_key, &message(1_000_000 + n)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let bodies: Vec<(String, String)> = (0..total).map(|n| (report_id(n), message(n))).collect();
    let acked: Times = Arc::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(load.interval());
    let mut requests = Vec::with_capacity(total);
    for (id, body) in bodies {
        ticker.tick().await;
        let (http, url, key, acked) = (
            http.clone(),
            lab_url.clone(),
            lab_key.to_owned(),
            acked.clone(),
        );
        requests.push(tokio::spawn(async move {
            send(&http, &url, &key, &body).await;
            acked.lock().unwrap().insert(id, Instant::now());
        }));
    }
    for r in requests {
        r.await.unwrap();
    }
    let offered = started.elapsed();
    bench::wait_for_all(&acked, &on_screen, Duration::from_secs(60)).await;
    let (screen, missing) = bench::lags(&acked, &on_screen);
    let (bus, _) = bench::lags(&acked, &consumed);
    println!(
        "{} critical reports offered at {rate}/s over {:.1} s; {missing} never reached the screen",
        acked.lock().unwrap().len(),
        offered.as_secs_f64()
    );
    println!();
    let screen = bench::percentiles(screen);
    let bus = bench::percentiles(bus);
    bench::table(
        "ACK to …",
        &[
            ("a bare consumer of `lab-results` (baseline)", bus),
            ("the hospital's screen, `critical` event (SSE)", screen),
        ],
    );
    println!(
        "screen / baseline: p50 {:.2}, p99 {:.2}; p99 within the 1 s target: {}",
        screen[0] / bus[0].max(0.001),
        screen[2] / bus[2].max(0.001),
        screen[2] < 1000.0
    );
    stop.cancel();
    let _ = baseline.await;
    lab.stop().await;
    clinic.stop().await;
    for url in &databases {
        drop_database(url).await;
    }
    assert_eq!(
        missing, 0,
        "every acknowledged critical value reaches the screen"
    );
}

fn report_id(n: usize) -> String {
    format!("{:015}", 500_000_000 + n)
}

/// Report `n`, addressed to the hospital, its total protein flagged HH.
fn message(n: usize) -> String {
    MESSAGE
        .replacen("|GW|RCV|", "|GW|hospital-daiichi|", 1)
        .replacen("|20111220131032|", &format!("|bench-{n}|"), 1)
        .replace("000000001219001", &report_id(n))
        .replacen(
            "|7.2|g/dl^g/dl^99XYZ|6.70-8.3||",
            "|12.5|g/dl^g/dl^99XYZ|6.70-8.3|HH|",
            1,
        )
}

async fn send(http: &reqwest::Client, lab: &str, key: &str, body: &str) {
    let answer = http
        .post(format!("{lab}/hl7v2"))
        .bearer_auth(key)
        .header("content-type", "application/hl7-v2")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let ack = answer.text().await.unwrap();
    assert!(
        status.is_success() && ack.contains("MSA|AA|"),
        "{status} {ack}"
    );
}
