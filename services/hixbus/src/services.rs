//! `hixbus serve …` and `hixbus orgs …`: the prescription services as separate processes (one
//! per container in production), and the organization keys they authenticate with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use hixbus_access::codes::CodeKeys;
use hixbus_access::{DEFAULT_KEY_VALIDITY_DAYS, Directory, MAX_KEY_VALIDITY_DAYS, digest};
use hixbus_bus::Publisher;
use hixbus_bus::http::HttpService;
use hixbus_contracts::codec::SchemaIdStrategy;
use hixbus_storage::Database;

use crate::bus_args::BusArgs;
use crate::registry::shutdown_signal;

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// The clinic gateway: FHIR prescriptions in, events out, the clinic view.
    ClinicGateway(ServiceArgs),
    /// The pharmacy service: inboxes, claims, dispensing.
    Pharmacy(ServiceArgs),
    /// The medication-safety check (no HTTP API).
    MedicationSafety {
        #[command(flatten)]
        bus: BusArgs,
    },
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[arg(long, env = "HIXBUS_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// postgres://… or sqlite://file.db
    #[arg(long, env = "HIXBUS_DATABASE_URL")]
    database: String,
    /// The organizations file (ids, roles, API key digests).
    #[arg(long, env = "HIXBUS_ORGANIZATIONS")]
    organizations: PathBuf,
    #[command(flatten)]
    codes: AccessCodeKeys,
    #[command(flatten)]
    bus: BusArgs,
}

/// The secret access codes are digested with, shared by the clinic gateway (which issues codes)
/// and the pharmacy service (which looks them up). See docs/prescriptions.md.
#[derive(Debug, Args)]
pub struct AccessCodeKeys {
    /// ID:HEX (at least 32 random bytes; `hixbus orgs new-access-code-key` makes one).
    #[arg(long, env = "HIXBUS_ACCESS_CODE_KEY", hide_env_values = true)]
    access_code_key: String,
    /// Earlier keys still accepted for claims after a rotation, comma-separated ID:HEX.
    #[arg(
        long,
        env = "HIXBUS_ACCESS_CODE_PREVIOUS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    access_code_previous_keys: Vec<String>,
}

impl AccessCodeKeys {
    fn keys(&self) -> anyhow::Result<CodeKeys> {
        CodeKeys::parse(
            &self.access_code_key,
            self.access_code_previous_keys.iter().map(String::as_str),
        )
        .context("--access-code-key")
    }
}

pub fn load_directory(path: &PathBuf) -> anyhow::Result<Directory> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Directory::from_toml(&text).with_context(|| format!("loading {}", path.display()))
}

pub async fn serve(cmd: ServeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServeCommand::ClinicGateway(args) => {
            let (directory, db, publisher, kafka) = prepare(&args, "hixbus-clinic-gateway").await?;
            let codes = args.codes.keys()?;
            let gateway =
                hixbus_clinic_gateway::build(args.listen, directory, &kafka, publisher, db, codes)
                    .await?;
            run_http(gateway, "clinic gateway").await?;
        }
        ServeCommand::Pharmacy(args) => {
            let (directory, db, publisher, kafka) = prepare(&args, "hixbus-pharmacy").await?;
            let codes = args.codes.keys()?;
            let pharmacy =
                hixbus_pharmacy::build(args.listen, directory, &kafka, publisher, db, codes)
                    .await?;
            run_http(pharmacy, "pharmacy service").await?;
        }
        ServeCommand::MedicationSafety { bus } => {
            let kafka = bus.kafka("hixbus-medication-safety");
            let publisher = Publisher::new(&kafka, bus.codec(SchemaIdStrategy::Lookup)?)?;
            let rules = hixbus_medication_safety::Rules::embedded()?;
            let consumer = hixbus_medication_safety::start(&kafka, publisher, rules).await?;
            println!("medication-safety check running");
            consumer.run(shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_http(service: HttpService, name: &str) -> anyhow::Result<()> {
    println!("{name} listening on {}", service.url());
    service.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn prepare(
    args: &ServiceArgs,
    client_id: &str,
) -> anyhow::Result<(Arc<Directory>, Database, Publisher, hixbus_bus::KafkaConfig)> {
    let directory = Arc::new(load_directory(&args.organizations)?);
    let db = Database::connect(&args.database)
        .await
        .with_context(|| format!("connecting to {}", hixbus_storage::redact(&args.database)))?;
    let kafka = args.bus.kafka(client_id);
    let publisher = Publisher::new(&kafka, args.bus.codec(SchemaIdStrategy::Lookup)?)?;
    Ok((directory, db, publisher, kafka))
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an API key: prints the key (give it to the organization) and the
    /// [[organization.api_key]] entry to add to its organization. The key itself is never
    /// stored.
    NewKey {
        /// Days until the key stops working (at most 730).
        #[arg(long, default_value_t = DEFAULT_KEY_VALIDITY_DAYS)]
        days: i64,
    },
    /// Create the secret access codes are digested with (HIXBUS_ACCESS_CODE_KEY).
    NewAccessCodeKey,
    /// Check an organizations file and list who is in it.
    Check {
        #[arg(long, env = "HIXBUS_ORGANIZATIONS")]
        organizations: PathBuf,
    },
}

pub fn orgs(cmd: OrgsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OrgsCommand::NewKey { days } => {
            if !(1..=MAX_KEY_VALIDITY_DAYS).contains(&days) {
                anyhow::bail!("--days must be from 1 to {MAX_KEY_VALIDITY_DAYS}");
            }
            let key = hixbus_access::new_key();
            let expires = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
            println!("key: {}", key.expose());
            println!();
            println!("# add to the organization in the organizations file:");
            println!("[[organization.api_key]]");
            println!("sha256 = \"{}\"", digest(key.expose()));
            println!("expires_on = {expires}");
        }
        OrgsCommand::NewAccessCodeKey => {
            let id = format!("k{}", chrono::Utc::now().format("%Y%m%d"));
            println!("{}", CodeKeys::generate_text(&id));
        }
        OrgsCommand::Check { organizations } => {
            let directory = load_directory(&organizations)?;
            let mut orgs: Vec<_> = directory.organizations().collect();
            orgs.sort_by(|a, b| a.id.cmp(&b.id));
            for org in orgs {
                println!(
                    "{:24} {:9} {} ({} keys)",
                    org.id,
                    org.role.as_str(),
                    org.name,
                    org.api_keys.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
