//! `hixbus`: one binary for every hixbus process and operator task.

mod acls;
mod audit;
mod bus_args;
mod demo;
mod dlq;
mod operator;
mod registry;
mod schemas;
mod services;
mod tail;
mod topics;
mod up;

use clap::{Parser, Subcommand};

/// Every service parses and builds JSON and Avro per request and per record; with glibc's
/// allocator, malloc and free were a quarter of the prescription flow's CPU. mimalloc halved the
/// flow's p99 at 350 prescriptions/s (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "hixbus",
    version,
    about = "hixbus: a health information exchange bus on Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole stack in one process (in-memory dev broker and registry unless a real
    /// cluster is named) with a demo clinic publishing sample events.
    Up(up::UpArgs),
    /// Print a topic's events as JSON lines.
    Tail(tail::TailArgs),
    /// Inspect and redrive dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Create the catalog's topics from infra/topics.toml.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Run or prepare the Confluent-compatible schema registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Inspect, document, check and register the event schemas.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Run one service (for deployments with a process per service).
    Serve(services::ServeArgs),
    /// Organization API keys.
    #[command(subcommand)]
    Orgs(services::OrgsCommand),
    /// Check the patients' access trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Inputs for trying the flow by hand.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
}

impl Cli {
    /// The `service.name` its traces and metrics carry: each deployed service its own, so a
    /// tracing backend tells the hops of one trace apart.
    fn service_name(&self) -> String {
        match &self.command {
            Command::Serve(args) => format!("hixbus-{}", args.service().name()),
            Command::Registry(registry::RegistryCommand::Serve(_)) => {
                "hixbus-schema-registry".to_owned()
            }
            _ => "hixbus".to_owned(),
        }
    }
}

/// With `HIXBUS_EXIT_WITH_PARENT=1` the process ends when the process that started it does:
/// test suites start services as child processes, and a suite that is killed must not leave
/// them running.
fn exit_with_parent() {
    if std::env::var_os("HIXBUS_EXIT_WITH_PARENT").is_none() {
        return;
    }
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                eprintln!("hixbus: the parent process ended; exiting");
                std::process::exit(1);
            }
        }
    });
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_with_parent();
    let cli = Cli::parse();
    let telemetry = hixbus_service::telemetry::init(&cli.service_name());
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Dlq(cmd) => dlq::run(cmd).await,
        Command::Topics(cmd) => topics::run(cmd).await,
        Command::Registry(cmd) => registry::run(cmd).await,
        Command::Schemas(cmd) => schemas::run(cmd).await,
        Command::Serve(args) => services::serve(args).await,
        Command::Orgs(cmd) => services::orgs(cmd),
        Command::Demo(cmd) => demo::run(cmd),
        Command::Audit(cmd) => audit::run(cmd).await,
    };
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
