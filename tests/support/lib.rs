//! Helpers shared by the end-to-end tests: a real registry on a fresh database, and plain HTTP
//! calls for checking answers byte-for-byte as a client in another language would see them.

pub mod bench;
mod broker;
pub mod hostile;
mod postgres;
pub mod rx;
mod watchdog;

pub use broker::{Engine, Tansu, TestBroker};
pub use postgres::PrivatePostgres;
pub use watchdog::{allow, watch};

/// The demo organizations (`hixbus up`'s): two clinics and hospitals, two pharmacies, a lab and
/// two insurers with their official codes, for flows that need them all.
pub const DEMO_ORGANIZATIONS: &str = include_str!("../../infra/organizations.demo.toml");

use std::net::SocketAddr;
use std::path::PathBuf;

use hixbus_contracts::registry::RegistryClient;
use hixbus_schema_registry::{RegistryConfig, RegistryServer};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the registry keeps its data in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A free port on the loopback address for a process a test starts with `--port`-like options.
///
/// It comes from below the kernel's ephemeral range. A port bound to 0 and let go comes from that
/// range, and every outgoing connection draws from it too, so a client of another test could take
/// the port before the process binds it. Ports already handed out in this process are not handed
/// out again, since tests run in parallel and none has bound its port yet.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const LOWEST: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|start| *start > LOWEST + 1_000)
        .unwrap_or(32_768);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let span = u128::from(ephemeral - LOWEST);
        let port = LOWEST + (uuid::Uuid::new_v4().as_u128() % span) as u16;
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
}

/// The PostgreSQL server tests create their databases on. CI and these machines run one at
/// 127.0.0.1:5432 with trust auth; `HIXBUS_TEST_POSTGRES_URL` points elsewhere.
pub fn postgres_admin_url() -> String {
    std::env::var("HIXBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A new, empty database URL for `backend`.
pub async fn fresh_database(backend: Backend) -> String {
    init_tracing();
    let name = format!("hixbus_test_{}", uuid::Uuid::new_v4().simple());
    match backend {
        Backend::Sqlite => {
            let path: PathBuf = std::env::temp_dir().join(format!("{name}.db"));
            format!("sqlite://{}", path.display())
        }
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            let admin = postgres_admin_url();
            let pool = sqlx::AnyPool::connect(&admin).await.unwrap_or_else(|e| {
                panic!("PostgreSQL is required for these tests ({admin}): {e}. Start it or set HIXBUS_TEST_POSTGRES_URL.")
            });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let mut url = url::Url::parse(&admin).expect("admin URL");
            url.set_path(&name);
            url.to_string()
        }
    }
}

/// Drops a PostgreSQL database made by [`fresh_database`], even while it is still in use. Tests
/// leave theirs to `tests/run`, which drops them all before a run; a benchmark drops its own,
/// because dozens of leftover databases slowed PostgreSQL enough to halve the measured capacity.
pub async fn drop_database(url: &str) {
    let Some(name) = url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .filter(|n| n.starts_with("hixbus_test_"))
    else {
        return;
    };
    sqlx::any::install_default_drivers();
    let admin = postgres_admin_url();
    if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
        let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
        if let Err(e) = dropped {
            eprintln!("could not drop test database {name}: {e}");
        }
        pool.close().await;
    }
}

/// The real registry, serving on a free port until stopped or dropped.
#[derive(Debug)]
pub struct TestRegistry {
    pub url: String,
    pub addr: SocketAddr,
    pub database_url: String,
    pub client: RegistryClient,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestRegistry {
    pub async fn fresh(backend: Backend) -> Self {
        Self::start(&fresh_database(backend).await).await
    }

    pub async fn start(database_url: &str) -> Self {
        Self::start_with(RegistryConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            database_url,
        ))
        .await
    }

    /// A registry with settings of its own (an organizations directory, say).
    pub async fn start_with(config: RegistryConfig) -> Self {
        init_tracing();
        let database_url = config.database_url.clone();
        let server = RegistryServer::build(config)
            .await
            .expect("registry starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let url = server.url();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            client: RegistryClient::new(&url).expect("registry url"),
            url,
            addr,
            database_url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("registry task").expect("registry served");
        }
    }

    /// A raw HTTP call: (status, content type, body parsed as JSON or kept as a string).
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        call(&format!("{}{path}", self.url), method, body).await
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    /// `WWW-Authenticate`, on a 401.
    pub challenge: Option<String>,
}

impl Response {
    /// The Confluent error code of an error answer.
    pub fn error_code(&self) -> Option<i64> {
        self.body.get("error_code").and_then(Value::as_i64)
    }
}

pub async fn call(url: &str, method: &str, body: Option<&str>) -> Response {
    call_as(url, method, body, None).await
}

/// [`call`] with an `Authorization` header.
pub async fn call_as(
    url: &str,
    method: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> Response {
    init_tracing();
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client
        .request(method, url)
        .header("content-type", "application/vnd.schemaregistry.v1+json");
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("request sent");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Response {
        status,
        content_type,
        body,
        challenge,
    }
}

/// The request body Confluent clients send to register or look up an Avro schema.
pub fn schema_body(schema: &str) -> String {
    serde_json::json!({ "schema": schema }).to_string()
}

/// Everything a bus test talks to: a real broker with the catalog's topics, and a real registry.
#[derive(Debug)]
pub struct BusStack {
    pub broker: TestBroker,
    pub registry: TestRegistry,
    pub kafka: hixbus_bus::KafkaConfig,
}

impl BusStack {
    pub async fn start() -> Self {
        init_tracing();
        let broker = TestBroker::start();
        let registry = TestRegistry::fresh(Backend::Sqlite).await;
        Self::on(broker, registry).await
    }

    /// The stack on a given broker (a durable one, say).
    pub async fn on(broker: TestBroker, registry: TestRegistry) -> Self {
        init_tracing();
        let kafka = hixbus_bus::KafkaConfig::new(&broker.bootstrap).with_client_id("hixbus-test");
        let specs = hixbus_bus::topics::specs(
            hixbus_bus::topics::EMBEDDED,
            hixbus_contracts::Catalog::embedded(),
        )
        .expect("topics file");
        hixbus_bus::topics::create(&kafka, &specs)
            .await
            .expect("topics created");
        Self {
            broker,
            registry,
            kafka,
        }
    }

    /// A codec that registers schemas on first use, as a fresh dev stack does.
    pub fn codec(&self) -> std::sync::Arc<hixbus_contracts::codec::Codec> {
        std::sync::Arc::new(hixbus_contracts::codec::Codec::new(
            self.registry.client.clone(),
            hixbus_contracts::codec::SchemaIdStrategy::Register,
        ))
    }

    pub fn publisher(&self) -> hixbus_bus::Publisher {
        hixbus_bus::Publisher::new(&self.kafka, self.codec()).expect("publisher")
    }
}

/// A service running until stopped.
#[derive(Debug)]
pub struct Service {
    /// Where it serves (as returned beside it by [`start_service`]).
    pub url: String,
    stop: hixbus_service::CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Graceful stop: in-flight requests finish, consumers commit and leave.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The access-code key every test flow's gateway and pharmacy share.
pub fn code_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| hixbus_access::codes::CodeKeys::generate_text("test"))
}

/// Starts `kind` as `hixbus up` does, on the stack's broker and registry, on any free port,
/// with its tables in `db`.
pub async fn start_service(
    kind: hixbus::stack::Kind,
    stack: &BusStack,
    directory: &std::sync::Arc<hixbus_access::Directory>,
    db: Option<&str>,
) -> (String, Service) {
    start_service_with(kind, stack, directory, db, &[]).await
}

/// [`start_service`] with more settings (`mllp_listen`…).
pub async fn start_service_with(
    kind: hixbus::stack::Kind,
    stack: &BusStack,
    directory: &std::sync::Arc<hixbus_access::Directory>,
    db: Option<&str>,
    settings: &[(&str, &str)],
) -> (String, Service) {
    let database = match db {
        Some(url) => Some(hixbus_storage::Database::connect(url).await.unwrap()),
        None => None,
    };
    let deps = hixbus_service::Deps {
        kafka: stack.kafka.clone(),
        codec: stack.codec(),
        directory: directory.clone(),
        database,
    };
    let mut all = vec![("listen", "127.0.0.1:0"), ("access_code_key", code_key())];
    all.extend_from_slice(settings);
    let service = kind.local(&all, deps).await.unwrap();
    let url = service.url();
    let stop = hixbus_service::CancellationToken::new();
    let task = tokio::spawn(service.run_until(stop.clone()));
    (url.clone(), Service { url, stop, task })
}

/// The directory `toml` describes, with a fresh API key for every organization in it (by id).
pub fn directory_with_keys(
    toml: &str,
) -> (
    std::sync::Arc<hixbus_access::Directory>,
    std::collections::HashMap<String, String>,
) {
    let mut directory = hixbus_access::Directory::from_toml(toml).expect("organizations");
    let ids: Vec<String> = directory.organizations().map(|o| o.id.clone()).collect();
    let keys = ids
        .into_iter()
        .map(|id| {
            let key = directory.issue_key(&id).expect("a key").expose().to_owned();
            (id, key)
        })
        .collect();
    (std::sync::Arc::new(directory), keys)
}

/// The `hixbus` binary the services run as: `HIXBUS_BIN`, else the release build beside this
/// test's target directory (`tests/run` builds it: the flow at 200/s needs optimized
/// services; the debug build carries about a third of that), else the debug build.
/// Runs `tests/python/SCRIPT ARGS…` with the Python that has Confluent's client
/// (`HIXBUS_PYTHON`, which tests/run sets), and fails the test with its output unless it passes.
pub async fn python_check(script: &str, args: &[&std::ffi::OsStr]) {
    let python = std::env::var("HIXBUS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let check = tokio::process::Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{python} {}: {e}", path.display()));
    assert!(
        check.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

pub fn hixbus_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("HIXBUS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .expect("the target directory");
    let release = target.join("release/hixbus");
    if release.exists() {
        return release;
    }
    let debug = target.join("debug/hixbus");
    assert!(
        debug.exists(),
        "{} is missing: build it with `cargo build --release -p hixbus`",
        release.display()
    );
    debug
}

/// A name no other test uses: for patients, groups and anything else tests could share.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Tracing with OpenTelemetry ids, once per test process, as every hixbus process has it.
pub fn init_tracing() {
    watch();
    static TELEMETRY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| {
        // Leaked on purpose: the providers must outlive every test in the process.
        std::mem::forget(hixbus_service::telemetry::init("hixbus-tests"));
    });
}

/// Records what a heavy suite did (inputs tried, kills survived, events checked): appended as a
/// JSON line to `HIXBUS_SUITE_REPORT`, which `tests/run` prints at the end of the run.
pub fn report(suite: &str, counts: Value) {
    use std::io::Write as _;
    let line = serde_json::json!({ "suite": suite, "counts": counts }).to_string();
    eprintln!("{line}");
    if let Ok(path) = std::env::var("HIXBUS_SUITE_REPORT")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// How many generated cases a property suite runs: `HIXBUS_ADVERSARIAL_CASES`, or `default`
/// (the CI size; `tests/run --long` sets a much larger number).
pub fn cases(default: u32) -> u32 {
    std::env::var("HIXBUS_ADVERSARIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `text` without its terminal colour codes (`ESC [ … m`), which services' logs carry.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
