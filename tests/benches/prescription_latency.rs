//! Accept-to-inbox latency of the prescription flow at a steady rate, on a real broker.
//!
//!   cargo bench -p hixbus-tests --bench prescription_latency
//!
//! A clinic posts JP e-prescription Bundles to the gateway at `HIXBUS_BENCH_RATE` per second
//! (default 500) for `HIXBUS_BENCH_SECONDS` (default 10); the pharmacy's screen is a live inbox
//! stream (SSE). For each prescription it records when the gateway answered 202 ("accepted")
//! and when the prescription arrived on the screen ("in inbox"), and prints percentiles, with
//! how many were admitted, shed (429/503 with `Retry-After`: over capacity) and lost (admitted,
//! never on the screen: must be none). The
//! medication-safety check runs too, as in production. Not a test: numbers go to
//! docs/performance.md.
//!
//! `HIXBUS_BENCH_BROKER=mock` runs the same flow on librdkafka's in-memory mock cluster (the
//! broker of `hixbus up`) instead of Tansu. Tansu ends every fetch with a sleep for whatever is
//! left of `fetch.wait.max.ms`, even when it found data, so each hop through it costs one to two
//! waits; the mock, like Kafka, answers as soon as data is there. Running both on the same
//! machine tells the test broker's share of the latency from hixbus's own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hixbus::stack::Kind;
use hixbus_access::Directory;
use hixbus_tests::{Backend, bench, drop_database, fresh_database, start_service};
use serde_json::{Value, json};

const BUNDLE: &str = include_str!(
    "../fixtures/fhir/jp-eprescription/Bundle-Bundle-for-JP-MedReq-ePreBundleExample01.json"
);
/// Clinics posting, in turn: a region's load comes from many clinics, each with its own key (and
/// its own share of a service's requests in flight, `hixbus_service::admission`).
const CLINICS: usize = 8;

/// The pharmacy and [`CLINICS`] clinics.
fn organizations() -> String {
    let mut toml = String::from(
        "[[organization]]\nid = \"pharmacy-aozora\"\nrole = \"pharmacy\"\nname = \"あおぞら薬局\"\n",
    );
    for n in 0..CLINICS {
        toml.push_str(&format!(
            "\n[[organization]]\nid = \"clinic-{n}\"\nrole = \"clinic\"\nname = \"クリニック {n}\"\n"
        ));
    }
    toml
}

/// The allocator the `hixbus` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let load = bench::Load::from_env((500, 10), (50, 1));
    let rate = load.rate;

    let (mut stack, mock) = bench::stack().await;
    println!("broker: {}", bench::broker_name(&stack, &mock));
    // How long the broker may hold a fetch (see docs/performance.md): the runtime's default is
    // 20 ms; the benchmark can try others.
    if let Ok(wait) = std::env::var("HIXBUS_BENCH_FETCH_WAIT_MS") {
        stack.kafka = stack.kafka.clone().with_option("fetch.wait.max.ms", wait);
    }
    let mut directory = Directory::from_toml(&organizations()).unwrap();
    let clinic_keys: Vec<String> = (0..CLINICS)
        .map(|n| {
            directory
                .issue_key(&format!("clinic-{n}"))
                .unwrap()
                .expose()
                .to_owned()
        })
        .collect();
    let pharmacy_key = directory.issue_key("pharmacy-aozora").unwrap();
    let directory = Arc::new(directory);
    let databases = [
        fresh_database(Backend::Postgres).await,
        fresh_database(Backend::Postgres).await,
    ];
    // The services as `hixbus up` starts them; they run until the bench process ends.
    let (gateway_url, gateway) =
        start_service(Kind::ClinicGateway, &stack, &directory, Some(&databases[0])).await;
    let (pharmacy_url, pharmacy) =
        start_service(Kind::Pharmacy, &stack, &directory, Some(&databases[1])).await;
    let (_, safety) = start_service(Kind::MedicationSafety, &stack, &directory, None).await;
    let services = [gateway, pharmacy, safety];
    let http = reqwest::Client::new();
    // The pharmacy's screen: first arrival of each prescription on the live stream.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = http
        .get(format!("{pharmacy_url}/pharmacy/inbox/stream"))
        .bearer_auth(pharmacy_key.expose())
        .send()
        .await
        .unwrap();
    // A screen that fell behind gets `resync` and reloads its inbox, as a real one does.
    let resyncs = Arc::new(AtomicUsize::new(0));
    {
        let (arrived, resyncs, http) = (arrived.clone(), resyncs.clone(), http.clone());
        let (inbox_url, key) = (
            format!("{pharmacy_url}/pharmacy/inbox"),
            pharmacy_key.expose().to_owned(),
        );
        tokio::spawn(async move {
            let mut pending = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    if event.lines().any(|l| l == "event: resync") {
                        resyncs.fetch_add(1, Ordering::Relaxed);
                        let reload = http.get(&inbox_url).bearer_auth(&key).send().await;
                        // Only fails once the run is over and the service stopped.
                        let Ok(inbox) = reload else { return };
                        let Ok(inbox) = inbox.json::<Value>().await else {
                            return;
                        };
                        let reloaded = Instant::now();
                        let mut arrived = arrived.lock().unwrap();
                        for item in inbox["prescriptions"].as_array().into_iter().flatten() {
                            if let Some(id) = item["prescription_id"].as_str() {
                                arrived.entry(id.to_owned()).or_insert(reloaded);
                            }
                        }
                    } else if let Some(id) = prescription_id(&event) {
                        arrived.lock().unwrap().entry(id).or_insert(now);
                    }
                }
            }
        });
    }

    // Warm up (connections, consumer groups) before the clock matters.
    for n in 0..20 {
        post(
            &http,
            &gateway_url,
            &clinic_keys[n % CLINICS],
            &bundle(1_000_000 + n),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // `HIXBUS_BENCH_RATES=500,1000,1500,2000` offers each rate in turn on the same stack (a
    // few seconds apart) and names the knee: the highest rate with nothing shed or lost and
    // accept-to-screen p99 under 50 ms.
    let rates: Vec<u64> = std::env::var("HIXBUS_BENCH_RATES")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|r| r.trim().parse().ok())
                .collect()
        })
        .filter(|list: &Vec<u64>| !list.is_empty())
        .unwrap_or_else(|| vec![rate]);
    let mut steps = Vec::new();
    let mut offset = 0;
    let target = Target {
        http: &http,
        gateway_url: &gateway_url,
        clinic_keys: &clinic_keys,
        arrived: &arrived,
        resyncs: &resyncs,
        pharmacy_url: &pharmacy_url,
        pharmacy_key: pharmacy_key.expose(),
    };
    for &rate in &rates {
        let load = bench::Load { rate, ..load };
        let total = load.total();
        let step = offer(&load, offset, &target).await;
        offset += total;
        steps.push(step);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if steps.len() > 1 {
        println!("| Offered | Admitted | Shed | Lost | 202 → screen p99 |");
        println!("|---|---|---|---|---|");
        for step in &steps {
            println!(
                "| {}/s | {} ({:.0}/s) | {} | {} | {:.1} ms |",
                step.rate, step.admitted, step.admitted_per_s, step.shed, step.lost, step.p99_ms
            );
        }
        let knee = steps
            .iter()
            .filter(|s| s.shed == 0 && s.lost == 0 && s.p99_ms < 50.0)
            .map(|s| s.rate)
            .max();
        match knee {
            Some(knee) => println!("knee: {knee}/s (nothing shed or lost, p99 < 50 ms)"),
            None => println!("knee: below {}/s", rates.iter().min().unwrap_or(&0)),
        }
    }
    let missing: usize = steps.iter().map(|s| s.lost).sum();
    for service in services {
        service.stop().await;
    }
    for url in &databases {
        drop_database(url).await;
    }
    assert_eq!(missing, 0, "every admitted prescription reaches the inbox");
}

/// What one rate's run gave.
struct Step {
    rate: u64,
    admitted: usize,
    admitted_per_s: f64,
    shed: usize,
    lost: usize,
    p99_ms: f64,
}

/// Where the load goes and where it is watched arriving, the same for every rate of a run.
#[derive(Clone, Copy)]
struct Target<'a> {
    http: &'a reqwest::Client,
    gateway_url: &'a str,
    /// One per clinic; the load takes them in turn.
    clinic_keys: &'a [String],
    /// Prescription id → when the pharmacy's screen showed it.
    arrived: &'a Arc<Mutex<HashMap<String, Instant>>>,
    /// Times the screen fell behind and reloaded its inbox.
    resyncs: &'a AtomicUsize,
    pharmacy_url: &'a str,
    pharmacy_key: &'a str,
}

/// Offers `load` (prescriptions numbered from `first`) to `target`, waits for them on the
/// screen, prints the run's figures.
async fn offer(load: &bench::Load, first: usize, target: &Target<'_>) -> Step {
    let Target {
        http,
        gateway_url,
        clinic_keys,
        arrived,
        resyncs,
        pharmacy_url,
        pharmacy_key,
    } = *target;
    let (rate, total) = (load.rate, load.total());
    let resyncs_before = resyncs.load(Ordering::Relaxed);
    // Built before the clock starts: the load generator shares the two cores with the system
    // under test, and building a Bundle costs about as much as the gateway's parsing it.
    let bodies: Vec<String> = (first..first + total).map(bundle).collect();
    let accepted: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let refused: Arc<Mutex<HashMap<u16, usize>>> = Arc::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(load.interval());
    let mut requests = Vec::with_capacity(total);
    for (n, body) in bodies.into_iter().enumerate() {
        ticker.tick().await;
        let (http, url, key, accepted, refused) = (
            http.clone(),
            gateway_url.to_owned(),
            clinic_keys[n % CLINICS].clone(),
            accepted.clone(),
            refused.clone(),
        );
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            match try_post(&http, &url, &key, &body).await {
                Ok(id) => {
                    accepted.lock().unwrap().insert(id, (sent, Instant::now()));
                }
                Err(status) => *refused.lock().unwrap().entry(status).or_default() += 1,
            }
        }));
    }
    for r in requests {
        r.await.unwrap();
    }
    let offered = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let arrived = arrived.lock().unwrap();
            accepted
                .lock()
                .unwrap()
                .keys()
                .all(|id| arrived.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A screen that reloaded after falling behind saw only the inbox's first page; what is not
    // on the screen yet may still be in the inbox. Lost is what is in neither.
    let in_inbox = inbox_ids(http, pharmacy_url, pharmacy_key).await;
    report(
        rate,
        offered,
        &accepted.lock().unwrap(),
        &refused.lock().unwrap(),
        &arrived.lock().unwrap(),
        &in_inbox,
        resyncs.load(Ordering::Relaxed) - resyncs_before,
    )
}

/// Prints the run's percentiles and what the run gave.
fn report(
    rate: u64,
    offered: Duration,
    accepted: &HashMap<String, (Instant, Instant)>,
    refused: &HashMap<u16, usize>,
    arrived: &HashMap<String, Instant>,
    in_inbox: &std::collections::HashSet<String>,
    resyncs: usize,
) -> Step {
    let mut accept_to_inbox = Vec::new();
    let mut request_to_accept = Vec::new();
    let (mut missing, mut unseen) = (0, 0);
    for (id, (sent, acked)) in accepted.iter() {
        request_to_accept.push(acked.duration_since(*sent).as_secs_f64() * 1000.0);
        match arrived.get(id) {
            Some(at) => {
                accept_to_inbox.push(at.saturating_duration_since(*acked).as_secs_f64() * 1000.0)
            }
            None if in_inbox.contains(id) => unseen += 1,
            None => missing += 1,
        }
    }
    let shed: usize = refused
        .iter()
        .filter(|(status, _)| matches!(status, 429 | 503))
        .map(|(_, n)| n)
        .sum();
    let failed: usize = refused.values().sum::<usize>() - shed;
    println!(
        "{} prescriptions offered at {rate}/s over {:.1} s: {} admitted ({:.0}/s), {shed} shed (429/503 with Retry-After), {failed} failed otherwise {refused:?}, {missing} admitted but lost",
        accepted.len() + shed + failed,
        offered.as_secs_f64(),
        accepted.len(),
        accepted.len() as f64 / offered.as_secs_f64()
    );
    println!(
        "the screen fell behind and reloaded its inbox {resyncs} times; {unseen} admitted were in the inbox but past the reloaded page (no latency for them)"
    );
    println!();
    println!("| Latency | p50 | p95 | p99 | max |");
    println!("|---|---|---|---|---|");
    let mut p99_ms = f64::NAN;
    for (what, samples) in [
        (
            "POST to 202 (gateway: validate, map, record, publish acks=all)",
            request_to_accept,
        ),
        ("202 to pharmacy screen (SSE)", accept_to_inbox),
    ] {
        let q = bench::percentiles(samples);
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            q[0], q[1], q[2], q[3]
        );
        p99_ms = q[2];
    }
    println!();
    Step {
        rate,
        admitted: accepted.len(),
        admitted_per_s: accepted.len() as f64 / offered.as_secs_f64(),
        shed,
        lost: missing,
        p99_ms,
    }
}

/// The example bundle as a new prescription `n`, for a patient of its own (most prescriptions
/// raise no alert; the duplicate path is measured by the tests, not here), dated today.
fn bundle(n: usize) -> String {
    let mut bundle: Value = serde_json::from_str(BUNDLE).unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    bundle["identifier"]["value"] = json!(format!("urn:uuid:bench-{n}-{}", uuid::Uuid::new_v4()));
    for entry in bundle["entry"].as_array_mut().unwrap() {
        let resource = &mut entry["resource"];
        match resource["resourceType"].as_str() {
            Some("Composition") => resource["date"] = json!(now),
            Some("MedicationRequest") => resource["authoredOn"] = json!(now),
            Some("Coverage") => {
                for ext in resource["extension"].as_array_mut().into_iter().flatten() {
                    if ext["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with("InsuredPersonNumber"))
                    {
                        ext["valueString"] = json!(format!("{}", 1_000_000 + n));
                    }
                }
            }
            _ => {}
        }
    }
    bundle.to_string()
}

async fn post(http: &reqwest::Client, gateway: &str, key: &str, body: &str) -> String {
    try_post(http, gateway, key, body)
        .await
        .unwrap_or_else(|status| panic!("the warm-up was refused with {status}"))
}

/// The prescription's id when the gateway admitted it (202), else the status it answered (a
/// connection that failed counts as 0).
async fn try_post(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
    body: &str,
) -> Result<String, u16> {
    let response = http
        .post(format!(
            "{gateway}/fhir/Bundle?target_pharmacy=pharmacy-aozora"
        ))
        .bearer_auth(key)
        .header("content-type", "application/fhir+json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|_| 0u16)?;
    if response.status().as_u16() != 202 {
        return Err(response.status().as_u16());
    }
    let answer: Value = response.json().await.map_err(|_| 0u16)?;
    Ok(answer["prescription_id"].as_str().unwrap().to_owned())
}

/// Every prescription id in the pharmacy's inbox, page by page.
async fn inbox_ids(
    http: &reqwest::Client,
    pharmacy: &str,
    key: &str,
) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let page: Value = http
            .get(format!("{pharmacy}/pharmacy/inbox"))
            .query(&[("limit", "500"), ("after", after.as_str())])
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["prescriptions"].as_array().into_iter().flatten() {
            if let Some(id) = item["prescription_id"].as_str() {
                ids.insert(id.to_owned());
            }
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return ids,
        }
    }
}

fn prescription_id(event: &str) -> Option<String> {
    let data = event.lines().find_map(|l| l.strip_prefix("data:"))?;
    let item: Value = serde_json::from_str(data.trim()).ok()?;
    item["prescription_id"].as_str().map(str::to_owned)
}
