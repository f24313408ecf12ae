//! A real Kafka-protocol broker for a test.
//!
//! In order of preference:
//! 1. `HIXBUS_TEST_BOOTSTRAP_SERVERS`: an external cluster, shared by every test (tests keep to
//!    their own patients and consumer groups, so they can share one);
//! 2. `HIXBUS_TEST_DOCKER=1` with a reachable Docker daemon: Apache Kafka in a container
//!    (testcontainers), one per test process;
//! 3. otherwise a Tansu broker of its own per test, from the binary `infra/broker/tansu.sh
//!    install` puts in `~/.cargo/bin` (or `HIXBUS_TANSU_BIN`). It starts in well under a second.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A broker for one test; a Tansu broker it started is stopped when it is dropped.
#[derive(Debug)]
pub struct TestBroker {
    pub bootstrap: String,
    tansu: Option<Tansu>,
}

impl TestBroker {
    /// The broker the environment asks for (see the module docs).
    pub fn start() -> Self {
        // Before any client exists: the runtime's instruments bind to the meter provider
        // installed first, and a test's /metrics would otherwise be empty.
        crate::init_tracing();
        if let Ok(servers) = std::env::var("HIXBUS_TEST_BOOTSTRAP_SERVERS")
            && !servers.is_empty()
        {
            return Self::external(servers);
        }
        if std::env::var("HIXBUS_TEST_DOCKER").is_ok_and(|v| v == "1") && docker_reachable() {
            return Self {
                bootstrap: docker_kafka().to_owned(),
                tansu: None,
            };
        }
        Self::tansu(Engine::Memory)
    }

    /// A Tansu broker of its own on `engine`, whatever the environment says.
    pub fn tansu(engine: Engine) -> Self {
        crate::init_tracing();
        let tansu = Tansu::start(engine, None);
        Self {
            bootstrap: tansu.bootstrap(),
            tansu: Some(tansu),
        }
    }

    /// What the broker is, for a report.
    pub fn describe(&self) -> String {
        match &self.tansu {
            Some(tansu) => match tansu.engine {
                Engine::Memory => "Tansu (memory engine)".to_owned(),
                Engine::Sqlite => "Tansu (SQLite engine)".to_owned(),
            },
            None => format!("the broker at {}", self.bootstrap),
        }
    }

    /// A broker someone else runs (and stops).
    pub fn external(bootstrap: String) -> Self {
        Self {
            bootstrap,
            tansu: None,
        }
    }

    /// Whether this test has the broker to itself (it can restart it, count every record).
    pub fn is_own(&self) -> bool {
        self.tansu.is_some()
    }
}

/// Tansu's storage engines (see ../shared/docs/broker-notes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Memory,
    /// Durable: survives `kill -9` and a restart.
    Sqlite,
}

/// A Tansu broker process this test owns.
#[derive(Debug)]
pub struct Tansu {
    port: u16,
    engine: Engine,
    /// `--authentication`: every client must authenticate (SASL).
    authentication: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Tansu {
    /// Starts a broker on a free port (or `port`).
    pub fn start(engine: Engine, port: Option<u16>) -> Self {
        // Before any client exists: the runtime's instruments bind to the meter provider
        // installed first, and a test's /metrics would otherwise be empty.
        crate::init_tracing();
        let mut dir = tempfile::tempdir().expect("broker directory");
        // HIXBUS_FAULT_KEEP=1 keeps the broker's log and storage for a post-mortem (its log
        // level is Tansu's own: RUST_LOG).
        dir.disable_cleanup(std::env::var_os("HIXBUS_FAULT_KEEP").is_some());
        let port = port.unwrap_or_else(crate::free_port);
        let mut tansu = Self {
            port,
            engine,
            authentication: false,
            dir,
            child: None,
        };
        tansu.spawn();
        tansu
    }

    /// The broker's directory: its log and storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates a SCRAM-SHA-512 credential with Tansu's own tool. Before
    /// [`require_authentication`](Self::require_authentication): an authenticating Tansu takes no
    /// request from a client that has not authenticated, and its tool does not.
    pub fn create_scram_user(&self, name: &str, password: &str) {
        let out = Command::new(tansu_bin())
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .args([name, password])
            .env("RUST_LOG", "error")
            .output()
            .expect("tansu user create");
        assert!(
            out.status.success(),
            "tansu user create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restarts the broker (same port and storage: use [`Engine::Sqlite`] to keep credentials)
    /// requiring every client to authenticate. Tansu checks SCRAM credentials; it accepts any
    /// PLAIN password and enforces no ACLs (docs/operations.md).
    pub fn require_authentication(&mut self) {
        self.authentication = true;
        self.restart();
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let storage = match self.engine {
            Engine::Memory => "memory://tansu/",
            Engine::Sqlite => "sqlite://broker.db",
        };
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        // Appended: a restarted broker's log follows the killed one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("broker log");
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", storage])
            .args(self.authentication.then_some("--authentication"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            // The group coordinator's decisions (leaders, expelled members), a few lines per
            // rebalance: what a post-mortem of a group that never formed needs.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "error,tansu_broker::coordinator=info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Tansu ({}): {e}. Install it with infra/broker/tansu.sh install",
                    tansu_bin().display()
                )
            });
        self.child = Some(child);
        wait_for_port(self.port, self.dir.path());
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("HIXBUS_TANSU_BIN") {
        return bin.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = Path::new(&home).join(".cargo/bin/tansu");
    if installed.exists() {
        installed
    } else {
        "tansu".into()
    }
}

fn wait_for_port(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
    panic!("Tansu did not start on port {port}:\n{log}");
}

fn docker_reachable() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One Apache Kafka container for the whole test process. It lives on a thread of its own
/// with its own runtime, because each `#[tokio::test]` has a runtime that ends with the test.
fn docker_kafka() -> &'static str {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use testcontainers::runners::AsyncRunner;
                use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
                let container = Kafka::default().start().await.expect("Kafka container");
                let port = container
                    .get_host_port_ipv4(KAFKA_PORT)
                    .await
                    .expect("Kafka port");
                tx.send(format!("127.0.0.1:{port}")).expect("report");
                // Keep the container for the life of the test process.
                std::future::pending::<()>().await;
                drop(container);
            });
        });
        rx.recv().expect("Kafka container started")
    })
}
