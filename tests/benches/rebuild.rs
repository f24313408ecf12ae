//! How fast a service rebuilds its state from a backlog on the topics, and how much memory it
//! takes doing it.
//!
//!   cargo bench -p hixbus-tests --bench rebuild
//!
//! Read models are projections of the topics: a new replica, a lost database or a migration
//! rebuilds one by reading everything again. This fills `prescriptions` and `dispensations` with
//! `HIXBUS_BENCH_EVENTS` events (default 50,000: half `PrescriptionIssued` with three lines,
//! each dispensed once; 200 days of issue dates, five prescriptions per patient), then starts,
//! one after the other, each as a process of the release `hixbus` binary:
//!
//! - the pharmacy service on an empty PostgreSQL database (its consumer group has no offsets, so
//!   it reads both topics from the start): done when its read model holds every prescription,
//!   dispensed (asked every 100 ms), and timed both from its start and from its group's join
//!   (its log's "partitions assigned"), which takes about three seconds whatever the backlog;
//!   its group must then have committed every record;
//! - the medication-safety check, which replays both topics into memory before it listens: done
//!   when it says it listens.
//!
//! The baseline, in the same run: a bare rdkafka consumer reading the same records (no decoding,
//! nothing applied), so each rebuild's rate is also given as a share of what reading alone
//! achieves on this broker and these cores. Each process's resident memory is sampled every
//! 100 ms; the medication-safety state is bounded by design (it forgets lines ended 30 days before
//! the latest issue date), so its memory must level off rather than grow with the backlog.
//!
//! The broker is librdkafka's mock cluster, in this process (`HIXBUS_BENCH_BROKER=memory` or
//! `sqlite` for Tansu's engines). The issue asks for a million events; none of these brokers
//! serves that back: the mock keeps only the last 5 MB of each partition (about 50,000 events
//! here), Tansu's memory engine loses the rest of a batch to a consumer that resumes inside it,
//! and its SQLite engine reads a large backlog back too slowly to finish (docs/performance.md).
//!
//! Without `--bench` (as `cargo test` runs it) a small backlog is used, to keep the bench
//! working; it still checks that each rebuild is complete: every prescription in the pharmacy's
//! database, dispensed, and every event replayed by the check. Not a test: numbers go to
//! docs/performance.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use hixbus_contracts::{
    Catalog, Date, PrescriptionDispensed, PrescriptionIssued, Timestamp, samples,
};
use hixbus_tests::{Backend, bench, drop_database, fresh_database};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The allocator the `hixbus` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Days of issue dates the backlog spans.
const DAYS: i64 = 200;
/// Prescriptions per patient over those days.
const PER_PATIENT: usize = 5;
/// Events of these sizes the mock cluster holds whole: it keeps the last 5 MB of each of the
/// topics' 12 partitions (compiled into librdkafka's `rdkafka_mock.c`).
const MOCK_HOLDS: usize = 50_000;
/// Publishes in flight while filling the topics.
const IN_FLIGHT: usize = 4096;

#[tokio::main]
async fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let events: usize = std::env::var("HIXBUS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 4_000 } else { MOCK_HOLDS });
    if smoke {
        println!("smoke run (no --bench): the numbers below mean nothing");
    }
    let prescriptions = events / 2;
    // The mock cluster: of the brokers here, the only one that serves a backlog back whole and
    // fast (see the module docs).
    let (stack, mock) = bench::stack_or("mock").await;
    if mock.is_some() && events > MOCK_HOLDS {
        println!(
            "warning: the mock cluster keeps the last 5 MB of each partition; {events} events \
             will not all be there to read (about {MOCK_HOLDS} fit)"
        );
    }
    println!("broker: {}", bench::broker_name(&stack, &mock));

    let topics = ["PrescriptionIssued", "PrescriptionDispensed"].map(|name| {
        Catalog::embedded()
            .entry(name)
            .expect("in the catalog")
            .topic
            .clone()
    });

    let filling = Instant::now();
    fill(&stack, prescriptions).await;
    // Every record published was acknowledged. The partitions' ends as the broker reports them
    // are only printed: Tansu 0.6.0 answers a partition's latest offset far short of its last
    // record when records came in batches (four thousand records showed as 101, a million as
    // 997,888), so progress is counted in records, against what was published.
    let ends = ends(&stack.kafka, &topics);
    let reported: i64 = ends.iter().map(|(_, _, end)| end).sum();
    let on_topics = (prescriptions * 2) as i64;
    if reported != on_topics {
        println!("the broker reports {reported} records on the topics' ends");
    }
    println!(
        "backlog: {} events ({prescriptions} prescriptions, each dispensed) in {:.1} s",
        prescriptions * 2,
        filling.elapsed().as_secs_f64()
    );

    let baseline = bare_read(&stack.kafka.bootstrap_servers.clone(), &ends, on_topics);
    let baseline_rate = on_topics as f64 / baseline.as_secs_f64();
    println!("bare read: {:.1} s", baseline.as_secs_f64());

    let mut files = tempfile::tempdir().expect("files");
    // HIXBUS_BENCH_KEEP=1 keeps the services' logs and configuration, to see what a rebuild
    // spent its time on (runs applied one at a time, waits for earlier events).
    if std::env::var_os("HIXBUS_BENCH_KEEP").is_some() {
        files.disable_cleanup(true);
        println!("the services' logs: {}", files.path().display());
    }
    let env = environment(&stack, files.path());
    let database = fresh_database(Backend::Postgres).await;

    // The pharmacy: rebuilt when its group has committed every record of both topics.
    let mut pharmacy = Rebuild::start("pharmacy", files.path(), &env, Some(&database));
    // Rebuilt when the read model holds every prescription, dispensed (asked every 100 ms).
    let rows = sqlx::PgPool::connect(&database)
        .await
        .expect("the database");
    let all = (prescriptions as i64, prescriptions as i64);
    pharmacy
        .until(Duration::from_secs(3_600), || {
            pharmacy_rows(&rows).map(|n| n == all)
        })
        .await;
    // And nothing was left for later: the group commits every record of both topics.
    let group = committed_reader(
        &stack.kafka.bootstrap_servers.clone(),
        hixbus_pharmacy::GROUP,
    );
    let committed_by = Instant::now() + Duration::from_secs(30);
    while committed(&group, &ends) != on_topics {
        assert!(
            Instant::now() < committed_by,
            "the pharmacy's group did not commit every record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pharmacy_report = pharmacy.finish();
    println!("pharmacy: {:.1} s", pharmacy_report.took.as_secs_f64());
    assert_eq!(pharmacy_rows(&rows).await, all);
    rows.close().await;
    drop_database(&database).await;

    // The medication-safety check: rebuilt when it listens (it replays before it binds).
    let mut safety = Rebuild::start("medication-safety", files.path(), &env, None);
    safety
        .until(Duration::from_secs(3_600), || {
            std::future::ready(
                std::fs::read_to_string(safety_log(files.path()))
                    .is_ok_and(|log| log.contains("medication-safety listening on")),
            )
        })
        .await;
    let safety_report = safety.finish();
    let log = std::fs::read_to_string(safety_log(files.path())).unwrap_or_default();
    assert_eq!(
        replayed(&log),
        Some(on_topics as usize),
        "the check replays every event:\n{log}"
    );

    println!();
    println!(
        "| Reader | events | time | events/s | share of bare read | after the group join: time, events/s | RSS at 25 / 50 / 75 / 100 % of the time | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| bare rdkafka consumer (baseline) | {on_topics} | {:.1} s | {:.0} | 1.00 | – | – | – |",
        baseline.as_secs_f64(),
        baseline_rate
    );
    for (name, report) in [
        ("pharmacy read model", &pharmacy_report),
        ("medication-safety state", &safety_report),
    ] {
        let rate = on_topics as f64 / report.took.as_secs_f64();
        let joined = report.joined.map_or("– (no group)".to_owned(), |joined| {
            let after = report.took.saturating_sub(joined).as_secs_f64();
            format!("{after:.1} s, {:.0}", on_topics as f64 / after)
        });
        println!(
            "| {name} | {on_topics} | {:.1} s | {rate:.0} | {:.2} | {joined} | {} | {} MiB |",
            report.took.as_secs_f64(),
            rate / baseline_rate,
            report
                .quartiles()
                .map(|kib| format!("{}", kib / 1024))
                .join(" / "),
            report.peak_kib / 1024
        );
    }
    drop(mock);
}

/// `prescriptions` prescriptions, each dispensed, issued over [`DAYS`] days in order.
async fn fill(stack: &hixbus_tests::BusStack, prescriptions: usize) {
    let publisher = stack.publisher();
    let patients = (prescriptions / PER_PATIENT).max(1);
    let first_day = hixbus_contracts::lifecycle::today_in_japan().plus_days(-(DAYS as i32));
    let published = futures::stream::iter(0..prescriptions)
        .map(|n| {
            let publisher = publisher.clone();
            async move {
                let (issued, dispensed) = prescription(n, prescriptions, patients, first_day);
                publisher.publish(&issued).await.expect("published");
                publisher.publish(&dispensed).await.expect("published");
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .count()
        .await;
    assert_eq!(published, prescriptions);
}

/// The `n`th prescription of `of` and its dispensing.
fn prescription(
    n: usize,
    of: usize,
    patients: usize,
    first_day: Date,
) -> (PrescriptionIssued, PrescriptionDispensed) {
    let patient = format!("pt-{:07}", n % patients);
    let day = first_day.plus_days((n as i64 * DAYS / of as i64) as i32);
    let mut issued = samples::prescription_issued(&patient, 3);
    issued.prescription_id = format!("rx-{n:08}");
    issued.issued_on = day;
    issued.expires_on = Some(day.plus_days(3));
    let midnight = i64::from(day.days_since_epoch()) * 86_400_000;
    issued.envelope.occurred_at = Timestamp::from_unix_millis(midnight + 9 * 3_600_000);
    let mut dispensed = samples::prescription_dispensed(&patient);
    dispensed.prescription_id = issued.prescription_id.clone();
    dispensed.envelope.occurred_at = Timestamp::from_unix_millis(midnight + 11 * 3_600_000);
    dispensed.envelope.causation_id = Some(issued.envelope.event_id.clone());
    (issued, dispensed)
}

/// Every partition of `topics` with its end offset.
fn ends(kafka: &hixbus_bus::KafkaConfig, topics: &[String]) -> Vec<(String, i32, i64)> {
    let consumer: BaseConsumer = client(&kafka.bootstrap_servers, "hixbus-bench-ends");
    let mut ends = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        for partition in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
                .expect("watermarks");
            ends.push((topic.clone(), partition.id(), high));
        }
    }
    ends
}

fn client(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("log_level", "3")
        .create()
        .expect("a consumer")
}

/// Reads every record of `ends`' partitions from the start without decoding it (assigned, so
/// no group join is timed); how long it took.
fn bare_read(bootstrap: &str, ends: &[(String, i32, i64)], expected: i64) -> Duration {
    let consumer = client(bootstrap, &hixbus_tests::unique("hixbus-bench-bare"));
    let mut partitions = TopicPartitionList::new();
    for (topic, partition, _) in ends {
        partitions
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .expect("a partition");
    }
    let started = Instant::now();
    consumer.assign(&partitions).expect("assigned");
    let mut read = 0i64;
    let deadline = started + Duration::from_secs(3_600);
    while read < expected {
        assert!(Instant::now() < deadline, "the bare read did not finish");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message.expect("a record");
            read += 1;
        }
    }
    started.elapsed()
}

/// A client that asks what `group` has committed (it never joins the group).
fn committed_reader(bootstrap: &str, group: &str) -> BaseConsumer {
    client(bootstrap, group)
}

/// Records of `ends`' partitions that `group` has committed.
fn committed(group: &BaseConsumer, ends: &[(String, i32, i64)]) -> i64 {
    let mut wanted = TopicPartitionList::new();
    for (topic, partition, _) in ends {
        wanted.add_partition(topic, *partition);
    }
    let Ok(committed) = group.committed_offsets(wanted, Duration::from_secs(10)) else {
        return 0;
    };
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

/// Prescriptions in the pharmacy's read model, and of those dispensed (none before its
/// migrations have made the table).
async fn pharmacy_rows(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as::<_, (i64, i64)>("SELECT count(*), count(dispensed) FROM pharmacy_prescriptions")
        .fetch_one(pool)
        .await
        .unwrap_or((0, 0))
}

/// What the processes share: the broker, the registry, an organizations file.
fn environment(stack: &hixbus_tests::BusStack, dir: &Path) -> Vec<(String, String)> {
    let expires = chrono::Utc::now().date_naive() + chrono::Duration::days(2);
    let key = hixbus_access::new_key();
    let organizations = format!(
        "[[organization]]\nid = \"pharmacy-aozora\"\nrole = \"pharmacy\"\nname = \"あおぞら薬局\"\n\n[[organization.api_key]]\nsha256 = \"{}\"\nexpires_on = {expires}\n",
        hixbus_access::digest(key.expose())
    );
    let file = dir.join("organizations.toml");
    std::fs::write(&file, organizations).expect("organizations file");
    vec![
        (
            "HIXBUS_BOOTSTRAP_SERVERS".to_owned(),
            stack.kafka.bootstrap_servers.clone(),
        ),
        ("HIXBUS_REGISTRY_URL".to_owned(), stack.registry.url.clone()),
        (
            "HIXBUS_ORGANIZATIONS".to_owned(),
            file.display().to_string(),
        ),
        (
            "HIXBUS_ACCESS_CODE_KEY".to_owned(),
            hixbus_tests::code_key().to_owned(),
        ),
        ("HIXBUS_AUDIT_TRAIL".to_owned(), "off".to_owned()),
    ]
}

fn safety_log(dir: &Path) -> PathBuf {
    dir.join("medication-safety.log")
}

/// The count in the check's `… state rebuilt from the topics replayed=N` line.
fn replayed(log: &str) -> Option<usize> {
    let plain = hixbus_tests::strip_ansi(log);
    let line = plain
        .lines()
        .find(|l| l.contains("state rebuilt from the topics"))?;
    let at = line.find("replayed")? + "replayed".len();
    let digits: String = line[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A service process rebuilding, and its resident memory over time.
struct Rebuild {
    name: &'static str,
    child: Child,
    log: PathBuf,
    started: Instant,
    /// (seconds since start, KiB resident).
    samples: Vec<(f64, u64)>,
    /// When its log first said its group's partitions were assigned (a group consumer's join:
    /// about three seconds, whatever the backlog).
    joined: Option<Duration>,
    /// When `until` saw it done.
    done: Option<Duration>,
}

struct Report {
    took: Duration,
    samples: Vec<(f64, u64)>,
    peak_kib: u64,
    joined: Option<Duration>,
}

impl Report {
    /// Resident memory at a quarter, half, three quarters and the end of the rebuild.
    fn quartiles(&self) -> [u64; 4] {
        let end = self.took.as_secs_f64();
        [0.25, 0.5, 0.75, 1.0].map(|q| {
            self.samples
                .iter()
                .take_while(|(t, _)| *t <= end * q)
                .last()
                .map_or(0, |(_, kib)| *kib)
        })
    }
}

impl Rebuild {
    fn start(name: &'static str, dir: &Path, env: &[(String, String)], db: Option<&str>) -> Self {
        let config = dir.join(format!("{name}.toml"));
        let mut text = format!("listen = \"127.0.0.1:{}\"\n", hixbus_tests::free_port());
        if let Some(db) = db {
            text.push_str(&format!("database_url = \"{db}\"\n"));
        }
        std::fs::write(&config, text).expect("configuration");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(hixbus_tests::hixbus_bin())
            .args(["serve", name, "--config"])
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // At least `info`, whatever the tests' own filter: the check's `replayed=` line is
            // how the bench knows what it replayed.
            .env(
                "HIXBUS_LOG",
                std::env::var("HIXBUS_BENCH_CHILD_LOG").unwrap_or("info,librdkafka=warn".into()),
            )
            .env("HIXBUS_EXIT_WITH_PARENT", "1")
            .env("NO_COLOR", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start hixbus serve");
        Self {
            name,
            child,
            log,
            started: Instant::now(),
            samples: Vec::new(),
            joined: None,
            done: None,
        }
    }

    /// Samples memory every 100 ms until `done`, failing after `limit` or if the process ends.
    async fn until<F: Future<Output = bool>>(
        &mut self,
        limit: Duration,
        mut done: impl FnMut() -> F,
    ) {
        loop {
            if let Some(kib) = status_kib(self.child.id(), "VmRSS") {
                self.samples
                    .push((self.started.elapsed().as_secs_f64(), kib));
            }
            if done().await {
                self.done = Some(self.started.elapsed());
                return;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if self.joined.is_none() && log.contains("partitions assigned") {
                self.joined = Some(self.started.elapsed());
            }
            assert!(
                self.child.try_wait().ok().flatten().is_none(),
                "{} ended:\n{log}",
                self.name
            );
            assert!(
                self.started.elapsed() < limit,
                "{} did not rebuild within {limit:?}:\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn finish(mut self) -> Report {
        let took = self.done.unwrap_or_else(|| self.started.elapsed());
        let peak_kib = status_kib(self.child.id(), "VmHWM").unwrap_or(0);
        let _ = self.child.kill();
        let _ = self.child.wait();
        Report {
            took,
            samples: std::mem::take(&mut self.samples),
            peak_kib,
            joined: self.joined,
        }
    }
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
