//! `hixbus up`: the whole stack in one process, for a first look and for development.
//!
//! With no cluster named, it starts an in-memory broker (librdkafka's mock cluster) and the
//! schema registry on in-memory SQLite — loudly labelled: nothing persists, nothing is secured.
//! With `--bootstrap-servers` / `--registry-url` (or `HIXBUS_BOOTSTRAP_SERVERS` /
//! `HIXBUS_REGISTRY_URL`) the same command runs against a real cluster and registry instead.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hixbus::stack::Kind;
use hixbus_access::Directory;
use hixbus_access::codes::CodeKeys;
use hixbus_bus::Publisher;
use hixbus_bus::dev::DevCluster;
use hixbus_bus::topics::{self, TopicSpec};
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use hixbus_contracts::{Catalog, Timestamp, gate, samples};
use hixbus_patient::demo::{DEMO_AUDIENCE, DemoIssuer};
use hixbus_schema_registry::{RegistryConfig, RegistryServer};
use hixbus_service::{CancellationToken, Deps};
use hixbus_storage::Database;

use crate::bus_args::{
    DEFAULT_BOOTSTRAP, DEFAULT_REGISTRY_URL, RegistryAccess, kafka_config, parse_option,
    registry_client,
};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Use this Kafka cluster instead of the in-memory dev broker.
    #[arg(long, env = "HIXBUS_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Use this schema registry instead of starting one.
    #[arg(long, env = "HIXBUS_REGISTRY_URL")]
    registry_url: Option<String>,
    #[command(flatten)]
    registry_access: RegistryAccess,
    /// Where the in-memory broker accepts clients.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_listen: SocketAddr,
    /// Where the embedded registry listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    registry_listen: SocketAddr,
    /// Where a service listens instead of its usual port, SERVICE=ADDRESS (repeatable), e.g.
    /// clinic-gateway=127.0.0.1:0 for any free port.
    #[arg(long = "listen", value_name = "SERVICE=ADDRESS", value_parser = parse_listen)]
    listen: Vec<(Kind, SocketAddr)>,
    /// Where the lab gateway takes HL7 v2 over MLLP (from the demo lab, on this machine).
    #[arg(long, default_value = "127.0.0.1:2575")]
    mllp_listen: SocketAddr,
    /// Where the demo sign-in provider (OpenID Connect, for the demo patients) listens.
    #[arg(long, default_value = "127.0.0.1:8098")]
    oidc_listen: SocketAddr,
    /// Milliseconds between demo events; 0 turns the demo clinic off.
    #[arg(long, default_value_t = 1000)]
    demo_interval_ms: u64,
    /// Extra librdkafka setting, KEY=VALUE (repeatable).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    kafka_options: Vec<(String, String)>,
}

fn parse_listen(text: &str) -> Result<(Kind, SocketAddr), String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=ADDRESS, got {text:?}"))?;
    let kind = <Kind as clap::ValueEnum>::from_str(name, false)?;
    let addr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    Ok((kind, addr))
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let (directory, keys) = demo_directory()?;
    let mut specs = topics::specs(topics::EMBEDDED, Catalog::embedded())?;
    // Each demo insurer's own topic (the mock cluster makes topics only when it starts).
    specs.extend(topics::insurer_specs(
        topics::EMBEDDED,
        directory
            .organizations()
            .filter(|o| o.role == hixbus_access::Role::Insurer)
            .map(|o| o.id.as_str()),
    )?);
    // The demo research project's topic too: the research export would otherwise ask the mock
    // cluster to create it, which it does not answer (the export gives up after 5 s, and `up`
    // was that much slower to be ready).
    specs.extend(topics::research_specs(
        topics::EMBEDDED,
        [DEMO_RESEARCH_PROJECT],
    )?);
    let stop = CancellationToken::new();

    // The broker: a real cluster, or the in-memory one.
    let (bootstrap, _dev_cluster, broker_label) = match &args.bootstrap_servers {
        Some(servers) => {
            let config = kafka_config(servers, "hixbus-up", &args.kafka_options);
            topics::create(&config, &specs).await?;
            (servers.clone(), None, "Kafka cluster".to_owned())
        }
        None => {
            let cluster = DevCluster::start(Some(args.kafka_listen), &specs)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e} (is another broker running? try --kafka-listen 127.0.0.1:0)"
                    )
                })?;
            let label = format!(
                "IN-MEMORY dev broker (librdkafka mock cluster, broker at {})",
                cluster.broker_address()
            );
            (cluster.bootstrap_servers().to_owned(), Some(cluster), label)
        }
    };

    let operator = keys
        .iter()
        .find(|(_, role, _)| *role == "operator")
        .map(|(id, _, key)| (id.clone(), key.clone()))
        .ok_or_else(|| anyhow::anyhow!("the demo organizations have no operator"))?;

    // The registry: a real one, or the embedded one on in-memory SQLite. Changing it takes the
    // operator's key, as in production; reading is open, so `curl` and `tail` work as shown.
    let (registry_url, registry_task, registry_label) = match &args.registry_url {
        Some(url) => (url.clone(), None, "schema registry".to_owned()),
        None => {
            let mut config = RegistryConfig::new(args.registry_listen, "sqlite::memory:");
            config.organizations = Some(directory.clone());
            config.anonymous_reads = true;
            let server = RegistryServer::build(config)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e} (is another registry running? try --registry-listen 127.0.0.1:0)"
                    )
                })?
                .map_app(hixbus_service::metrics::measured);
            let url = server.url();
            let task = tokio::spawn(server.run_until(stop.clone().cancelled_owned()));
            (
                url,
                Some(task),
                "IN-MEMORY schema registry (SQLite in memory; changes need the operator key)"
                    .to_owned(),
            )
        }
    };
    let registry = registry_client(&registry_url, &args.registry_access)?;
    let registrar = match (&args.registry_url, &args.registry_access.registry_auth) {
        (None, _) => registry.clone().with_basic_auth(&operator.0, &operator.1),
        _ => registry.clone(),
    };
    let registered = gate::register(&registrar, Catalog::embedded()).await?;

    let kafka = kafka_config(&bootstrap, "hixbus-up", &args.kafka_options);
    let codec = Arc::new(Codec::new(registry, SchemaIdStrategy::Lookup));
    let issuer = start_demo_issuer(args.oidc_listen, &stop).await?;
    let services = start_services(&args, &kafka, &codec, &stop, directory, keys, &issuer).await?;
    let demo = (args.demo_interval_ms > 0).then(|| {
        let publisher = Publisher::new(&kafka, codec.clone());
        let interval = Duration::from_millis(args.demo_interval_ms);
        let stopped = stop.clone();
        tokio::spawn(async move { demo_clinic(publisher?, interval, stopped).await })
    });
    let demo_lab = (args.demo_interval_ms > 0).then(|| {
        // A result every five demo events, over MLLP as a laboratory system sends it.
        let interval = Duration::from_millis(args.demo_interval_ms.saturating_mul(5));
        tokio::spawn(demo_lab(args.mllp_listen, interval, stop.clone()))
    });

    Banner {
        bootstrap: &bootstrap,
        broker_label: &broker_label,
        registry_url: &registry_url,
        registry_label: &registry_label,
        schemas: registered.len(),
        specs: &specs,
        demo_interval_ms: args.demo_interval_ms,
        in_memory: args.bootstrap_servers.is_none(),
        services: &services,
        mllp: args.mllp_listen,
    }
    .print();

    hixbus_service::shutdown_signal().await;
    stop.cancel();
    if let Some(lab) = demo_lab {
        match lab.await {
            Ok(sent) => println!("demo lab stopped after {sent} results"),
            Err(e) => eprintln!("demo lab crashed: {e}"),
        }
    }
    if let Some(demo) = demo {
        match demo.await {
            Ok(Ok(sent)) => println!("demo clinic stopped after {sent} events"),
            Ok(Err(e)) => eprintln!("demo clinic failed: {e}"),
            Err(e) => eprintln!("demo clinic crashed: {e}"),
        }
    }
    for (kind, task) in services.tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{kind} stopped with an error: {e}"),
            Err(e) => eprintln!("{kind} crashed: {e}"),
        }
    }
    if let Some(task) = registry_task {
        task.await??;
    }
    println!("hixbus stopped");
    Ok(ExitCode::SUCCESS)
}

/// The demo organizations; each gets a fresh API key at every start.
const DEMO_ORGANIZATIONS: &str = include_str!("../../../infra/organizations.demo.toml");

/// The demo research project's id, as `infra/research/projects.demo.toml` declares it.
const DEMO_RESEARCH_PROJECT: &str = "demo-lab-trends";
/// The demo research project (docs/research.md).
const DEMO_RESEARCH_PROJECTS: &str = include_str!("../../../infra/research/projects.demo.toml");

/// The demo insurer's members (one is the e-prescription examples' patient).
const DEMO_ROSTER: &str = include_str!("../../../infra/insurers/insurer-kenpo.roster.csv");

/// The services `up` runs, their addresses and the demo keys.
struct Services {
    urls: Vec<(Kind, String)>,
    keys: Vec<(String, &'static str, String)>,
    /// (subject, who, ID token) of each demo patient.
    patients: Vec<(&'static str, &'static str, String)>,
    /// The patient record's database, where the access trail is kept.
    patient_database: Option<String>,
    tasks: Vec<(Kind, tokio::task::JoinHandle<std::io::Result<()>>)>,
    /// Where the services' SQLite files are; removed when `up` ends.
    _data: tempfile::TempDir,
}

impl Services {
    fn url(&self, kind: Kind) -> &str {
        self.urls
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("(not running)", |(_, url)| url)
    }
}

/// (organization id, role, API key) of each demo organization.
type DemoKeys = Vec<(String, &'static str, String)>;

/// The demo organizations, each with a fresh key valid for a week.
fn demo_directory() -> anyhow::Result<(Arc<Directory>, DemoKeys)> {
    let mut directory = Directory::from_toml(DEMO_ORGANIZATIONS)?;
    let mut ids: Vec<(String, &'static str)> = directory
        .organizations()
        .map(|o| (o.id.clone(), o.role.as_str()))
        .collect();
    ids.sort();
    let expires = chrono::Utc::now().date_naive() + chrono::Duration::days(7);
    let mut keys = Vec::new();
    for (id, role) in ids {
        let key = directory.issue_key_until(&id, expires)?;
        keys.push((id, role, key.expose().to_owned()));
    }
    Ok((Arc::new(directory), keys))
}

async fn start_services(
    args: &UpArgs,
    kafka: &hixbus_bus::KafkaConfig,
    codec: &Arc<Codec>,
    stop: &CancellationToken,
    directory: Arc<Directory>,
    keys: DemoKeys,
    issuer: &DemoIssuer,
) -> anyhow::Result<Services> {
    // Files, not `sqlite::memory:`: an in-memory database is one connection, so one
    // organization's long read would make every other one wait. Gone when `up` ends.
    let data = tempfile::Builder::new().prefix("hixbus-up-").tempdir()?;
    // Shared by the gateway (which digests the codes it issues) and the pharmacy (which looks
    // presented codes up by digest); new at every start, like everything else here.
    let access_code_key = CodeKeys::generate_text("up");
    let roster_path = data.path().join("insurer-kenpo.roster.csv");
    std::fs::write(&roster_path, DEMO_ROSTER)?;
    let roster = roster_path.display().to_string();
    // The demo research project, with a fresh key at every start.
    let projects_path = data.path().join("research-projects.toml");
    std::fs::write(&projects_path, DEMO_RESEARCH_PROJECTS)?;
    let projects = projects_path.display().to_string();
    let keys_path = data.path().join("research-keys.toml");
    std::fs::write(
        &keys_path,
        hixbus_research::projects::Keys::generate_text(&[DEMO_RESEARCH_PROJECT], "up"),
    )?;
    let project_keys = keys_path.display().to_string();
    let mut urls: Vec<(Kind, String)> = Vec::new();
    let mut tasks = Vec::new();
    let mut patient_database = None;
    for &kind in Kind::ALL {
        let database = if kind.keeps_tables() {
            let url = format!(
                "sqlite://{}",
                data.path().join(format!("{kind}.db")).display()
            );
            Some(Database::connect(&url).await?)
        } else {
            None
        };
        let patient_db = (kind == Kind::Patient).then(|| database.clone()).flatten();
        let deps = Deps {
            kafka: kafka.clone(),
            codec: codec.clone(),
            directory: directory.clone(),
            database,
        };
        let listen = args
            .listen
            .iter()
            .rev()
            .find(|(k, _)| *k == kind)
            .map(|(_, addr)| addr.to_string());
        let mllp = args.mllp_listen.to_string();
        let mut settings = vec![
            ("access_code_key", access_code_key.as_str()),
            // The demo insurer decides with its demo roster.
            ("insurer", "insurer-kenpo"),
            ("roster", roster.as_str()),
            ("mllp_listen", mllp.as_str()),
            // The demo lab sends from this machine.
            ("mllp_senders", "lab-kensa=127.0.0.1"),
            // Patients sign in at the demo provider.
            ("oidc_issuer", issuer.issuer()),
            ("oidc_audience", DEMO_AUDIENCE),
            // The research export releases the demo project in small batches.
            ("projects", projects.as_str()),
            ("project_keys", project_keys.as_str()),
            ("batch_records", "50"),
            ("batch_wait_ms", "5000"),
        ];
        if let Some(listen) = &listen {
            settings.push(("listen", listen.as_str()));
        }
        // The consoles call the services started before them, wherever they listen.
        let url_of = |wanted: Kind| {
            urls.iter()
                .find(|(k, _)| *k == wanted)
                .map(|(_, url)| url.clone())
                .unwrap_or_default()
        };
        let upstreams = [
            ("clinic_gateway_url", url_of(Kind::ClinicGateway)),
            ("pharmacy_url", url_of(Kind::Pharmacy)),
            ("claims_url", url_of(Kind::Claims)),
            ("insurer_feed_url", url_of(Kind::InsurerFeed)),
            ("insurer_url", url_of(Kind::Insurer)),
            ("patient_url", url_of(Kind::Patient)),
        ];
        let ops_url = url_of(Kind::Ops);
        if kind == Kind::Web {
            settings.extend(upstreams.iter().map(|(k, v)| (*k, v.as_str())));
            settings.push(("ops_url", ops_url.as_str()));
        }
        // The operator's view: the lag of the services' groups (the mock cluster lists none)
        // and the health of every service started before it.
        let groups = hixbus::stack::CONSUMER_GROUPS.join(",");
        let health_checks = urls
            .iter()
            .map(|(k, url)| format!("{k}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        if kind == Kind::Ops {
            settings.push(("groups", groups.as_str()));
            settings.push(("health_checks", health_checks.as_str()));
        }
        let service = kind
            .local(&settings, deps)
            .await
            .map_err(|e| anyhow::anyhow!(
                "{kind}: {e} (try --listen {kind}=127.0.0.1:0, or --mllp-listen 127.0.0.1:0 for the lab gateway's MLLP)"
            ))?;
        urls.push((kind, service.url()));
        tasks.push((kind, tokio::spawn(service.run_until(stop.clone()))));
        if let Some(db) = patient_db {
            patient_database = Some(db.url().to_owned());
            enrol_demo_patients(db, issuer).await?;
        }
    }
    let patients = DEMO_PATIENTS
        .iter()
        .map(|(subject, name, _)| {
            let token = issuer.id_token(subject, DEMO_AUDIENCE, DEMO_TOKEN_TTL);
            (*subject, *name, token)
        })
        .collect();
    Ok(Services {
        urls,
        keys,
        patients,
        patient_database,
        tasks,
        _data: data,
    })
}

/// The demo patients: (sign-in subject, who, patient reference). Taro is the e-prescription
/// examples' patient (the README's flow); the demo clinic sends events for demo-0001 all along.
const DEMO_PATIENTS: &[(&str, &str, &str)] = &[
    (
        "demo-taro",
        "the e-prescription examples' patient",
        "jp-insured:06123456:12345:67890:01",
    ),
    (
        "demo-0001",
        "the demo clinic's first patient",
        "patient:demo-0001",
    ),
];

/// How long the ID tokens `up` prints are valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The demo sign-in provider, serving its discovery document and keys at `listen`.
async fn start_demo_issuer(
    listen: SocketAddr,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<DemoIssuer>> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("demo sign-in provider on {listen}: {e} (try --oidc-listen 127.0.0.1:0)")
    })?;
    let issuer = Arc::new(DemoIssuer::new(&format!(
        "http://{}",
        listener.local_addr()?
    ))?);
    tokio::spawn(issuer.clone().serve(listener, stop.clone()));
    Ok(issuer)
}

/// Enrols each demo patient's sign-in to their record, as their clinic's code would.
async fn enrol_demo_patients(db: Database, issuer: &DemoIssuer) -> anyhow::Result<()> {
    let store = hixbus_patient::store::Store::new(db).await?;
    for (subject, _, patient_ref) in DEMO_PATIENTS {
        store
            .enrol(
                issuer.issuer(),
                subject,
                None,
                Some((patient_ref, "hixbus-up")),
                chrono::Utc::now().timestamp_millis(),
            )
            .await?;
    }
    Ok(())
}

/// Publishes a realistic event every `interval`, cycling through every event type and twenty
/// fictional patients, until stopped. Returns how many the broker acknowledged.
async fn demo_clinic(
    publisher: Publisher,
    interval: Duration,
    stop: CancellationToken,
) -> Result<u64, hixbus_bus::PublishError> {
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(interval);
    for round in 0u64.. {
        let patient = format!("patient:demo-{:04}", round % 20 + 1);
        for mut event in samples::one_of_each(&patient) {
            // Made by the insurer delivery from the prescriptions, on insurers' own topics; the
            // access trail is made by the services from their audit logs, and research records
            // by the research export — never by hand.
            if matches!(
                event,
                hixbus_contracts::Event::ClaimEvidence(_)
                    | hixbus_contracts::Event::PatientDataAccessed(_)
                    | hixbus_contracts::Event::ResearchRecord(_)
                    | hixbus_contracts::Event::ResearchReleased(_)
            ) {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(sent),
                _ = ticker.tick() => {}
            }
            event.envelope_mut().occurred_at = Timestamp::now();
            match publisher.publish_event(&event).await {
                Ok(_) => sent += 1,
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "demo event not published; will try the next one");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(sent)
}

/// Sends the SS-MIX2 example to the lab gateway over MLLP every `interval` (one in five with
/// a critically high value) until stopped, waiting for each ACK; how many were accepted.
async fn demo_lab(mllp: SocketAddr, interval: Duration, stop: CancellationToken) -> u64 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut accepted = 0u64;
    let mut ticker = tokio::time::interval(interval);
    let mut connection: Option<tokio::net::TcpStream> = None;
    for round in 0u64.. {
        tokio::select! {
            () = stop.cancelled() => return accepted,
            _ = ticker.tick() => {}
        }
        let message = crate::demo::fresh_lab_message(round % 5 == 4);
        let mut framed = vec![0x0B];
        framed.extend_from_slice(message.as_bytes());
        framed.extend_from_slice(&[0x1C, 0x0D]);
        let sent = async {
            if connection.is_none() {
                connection = Some(tokio::net::TcpStream::connect(mllp).await?);
            }
            let stream = connection.as_mut().expect("connected above");
            stream.write_all(&framed).await?;
            let mut ack = Vec::new();
            let mut chunk = [0u8; 1024];
            while !ack.ends_with(&[0x1C, 0x0D]) {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other(
                        "the lab gateway closed the connection",
                    ));
                }
                ack.extend_from_slice(&chunk[..n]);
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&ack).contains("MSA|AA|"))
        };
        match tokio::time::timeout(Duration::from_secs(10), sent).await {
            Ok(Ok(true)) => accepted += 1,
            Ok(Ok(false)) => tracing::warn!("the lab gateway refused the demo lab's message"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "demo lab message not sent; will reconnect");
                connection = None;
            }
            Err(_) => {
                tracing::warn!("no ACK for the demo lab's message in 10 s; will reconnect");
                connection = None;
            }
        }
    }
    accepted
}

/// What `hixbus up` tells the user it started.
struct Banner<'a> {
    bootstrap: &'a str,
    broker_label: &'a str,
    registry_url: &'a str,
    registry_label: &'a str,
    schemas: usize,
    specs: &'a [TopicSpec],
    demo_interval_ms: u64,
    in_memory: bool,
    services: &'a Services,
    mllp: SocketAddr,
}

impl Banner<'_> {
    fn print(&self) {
        let rule = "=".repeat(78);
        println!("{rule}");
        if self.in_memory {
            println!(" hixbus dev stack: IN-MEMORY, DEV ONLY. Nothing is persisted or secured;");
            println!(" everything is gone when this process stops.");
        } else {
            println!(" hixbus stack on an external cluster");
        }
        println!("{rule}");
        println!(
            " Kafka bootstrap   {:<24} {}",
            self.bootstrap, self.broker_label
        );
        println!(
            " Schema registry   {:<24} {}, {} schemas",
            self.registry_url, self.registry_label, self.schemas
        );
        let topics: Vec<&str> = self
            .specs
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !n.ends_with(hixbus_bus::dlq::SUFFIX))
            .collect();
        println!(" Topics            {} (+ .dlq for each)", topics.join(", "));
        if self.demo_interval_ms > 0 {
            println!(
                " Demo clinic       one sample event every {} ms, all event types",
                self.demo_interval_ms
            );
            println!(
                " Demo lab          an SS-MIX2 result over MLLP every {} ms (one in five critical)",
                self.demo_interval_ms.saturating_mul(5)
            );
        }
        println!();
        let mut flags = String::new();
        if self.bootstrap != DEFAULT_BOOTSTRAP {
            flags.push_str(&format!(" --bootstrap-servers {}", self.bootstrap));
        }
        if self.registry_url != DEFAULT_REGISTRY_URL {
            flags.push_str(&format!(" --registry-url {}", self.registry_url));
        }
        println!(
            " Clinic gateway    {:<24} FHIR R4 prescriptions in, clinic view",
            self.services.url(Kind::ClinicGateway)
        );
        println!(
            " Pharmacy service  {:<24} inboxes (live), claims, dispensing",
            self.services.url(Kind::Pharmacy)
        );
        println!(
            " Medication safety {:<24} on the stream (health only)",
            self.services.url(Kind::MedicationSafety)
        );
        println!(
            " Lab gateway       {:<24} lab results in (HL7 v2: POST /hl7v2, MLLP on {}; FHIR), checkups in",
            self.services.url(Kind::LabGateway),
            self.mllp
        );
        println!(
            " Insurer delivery  {:<24} each insurer's own claims, evidence and checkups (GET /insurer/feed, /stream; topic insurer.<id>.feed)",
            self.services.url(Kind::InsurerFeed)
        );
        println!(
            " Claims            {:<24} dispensings billed for the pharmacy, FHIR Claims in, decisions (GET /claims)",
            self.services.url(Kind::Claims)
        );
        println!(
            " Insurer (demo)    {:<24} insurer-kenpo decides its members' claims (roster: 3 members)",
            self.services.url(Kind::Insurer)
        );
        println!(
            " Patient record    {:<24} each patient's own timeline, medications, results, expenses, FHIR export",
            self.services.url(Kind::Patient)
        );
        println!(
            " Research export   {:<24} de-identified, k-anonymous releases of project demo-lab-trends (topic research.demo-lab-trends.records; GET /research/releases)",
            self.services.url(Kind::Research)
        );
        println!();
        let web = self.services.url(Kind::Web);
        println!(
            " Consoles          {web:<24} open in a browser (docs/consoles.md); sign in with a key below:"
        );
        println!(
            "   pharmacy: {web}/pharmacy with $AOZORA_KEY   clinic and its lab results: {web}/clinic with $DAIICHI_KEY"
        );
        println!(
            "   insurer: {web}/insurer with $KENPO_KEY   operator: {web}/operator with $OPERATOR_KEY"
        );
        println!(
            "   patients: {web}/patient, signing in at the demo provider as demo-taro or demo-0001"
        );
        println!();
        println!(
            " Demo API keys (new at every start, valid 7 days; the operator's changes the registry):"
        );
        for (id, role, key) in &self.services.keys {
            let var = id.split('-').next_back().unwrap_or(id).to_uppercase();
            println!("   export {var}_KEY={key}   # {id} ({role})");
        }
        println!();
        println!(
            " Demo patients (ID tokens from the demo sign-in provider, valid 12 hours; docs/patients.md):"
        );
        for (subject, who, token) in &self.services.patients {
            let var = subject.trim_start_matches("demo-").to_uppercase();
            println!("   export PATIENT_{var}={token}   # {who}");
        }
        println!();
        println!(" In another terminal:");
        println!("   cargo run -p hixbus -- tail prescriptions --from-beginning{flags}");
        println!("   curl {}/subjects", self.registry_url);
        println!("   cargo run -p hixbus -- demo fhir-bundle > rx.json");
        println!(
            "   curl -X POST '{}/fhir/Bundle?target_pharmacy=pharmacy-aozora' -H \"Authorization: Bearer $SAKURA_KEY\" -H 'Content-Type: application/fhir+json' --data @rx.json",
            self.services.url(Kind::ClinicGateway)
        );
        println!(
            "   curl -N {}/pharmacy/inbox/stream -H \"Authorization: Bearer $AOZORA_KEY\"",
            self.services.url(Kind::Pharmacy)
        );
        println!(
            "   curl -X POST {}/pharmacy/prescriptions/RX_ID/dispense -H \"Authorization: Bearer $AOZORA_KEY\" -H 'Content-Type: application/json' -d '{{\"pharmacist\":{{\"id\":\"ph-1\"}}}}'",
            self.services.url(Kind::Pharmacy)
        );
        println!(
            "   curl {}/claims/dispensing:RX_ID -H \"Authorization: Bearer $AOZORA_KEY\"   # its claim, priced, and insurer-kenpo's decision",
            self.services.url(Kind::Claims)
        );
        println!("   cargo run -p hixbus -- demo hl7-lab > lab.hl7");
        println!(
            "   curl -X POST {}/hl7v2 -H \"Authorization: Bearer $KENSA_KEY\" -H 'Content-Type: application/hl7-v2' --data-binary @lab.hl7",
            self.services.url(Kind::LabGateway)
        );
        println!(
            "   curl -N {}/clinic/results/stream -H \"Authorization: Bearer $DAIICHI_KEY\"",
            self.services.url(Kind::ClinicGateway)
        );
        println!("   cargo run -p hixbus -- demo checkup > checkup.json");
        println!(
            "   curl -X POST {}/fhir/Bundle -H \"Authorization: Bearer $DAIICHI_KEY\" -H 'Content-Type: application/fhir+json' --data @checkup.json",
            self.services.url(Kind::LabGateway)
        );
        println!(
            "   curl {}/insurer/feed -H \"Authorization: Bearer $KENPO_KEY\"",
            self.services.url(Kind::InsurerFeed)
        );
        println!(
            "   curl {}/patient/timeline -H \"Authorization: Bearer $PATIENT_TARO\"   # the patient's own record (also /patient/medications, /expenses, /export, /access)",
            self.services.url(Kind::Patient)
        );
        if let Some(db) = &self.services.patient_database {
            println!(
                "   cargo run -q -p hixbus -- audit verify --database-url {db}   # the access trail's hash chains"
            );
        }
        println!();
        println!(" Ctrl-C stops everything.");
        println!("{rule}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` makes the demo project's topic on the in-memory broker under this id; the export
    /// publishes under the file's. Apart, the export would wait on a topic creation the
    /// in-memory broker never answers.
    #[test]
    fn the_demo_project_is_the_one_the_file_declares() {
        let text = DEMO_RESEARCH_PROJECTS;
        assert_eq!(text.matches("[[project]]").count(), 1);
        assert!(text.contains(&format!("\nid = \"{DEMO_RESEARCH_PROJECT}\"\n")));
    }
}
