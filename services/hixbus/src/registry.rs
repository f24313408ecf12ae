use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use hixbus_contracts::registry::RegistryClient;
use hixbus_contracts::{Catalog, gate};
use hixbus_schema_registry::domain::CompatibilityLevel;
use hixbus_schema_registry::store::Store;
use hixbus_schema_registry::{RegistryConfig, RegistryServer};
use hixbus_storage::redact;

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the registry's REST API until Ctrl-C.
    Serve(ServeArgs),
    /// Create the registry's tables (serve also does this on start).
    Migrate(DatabaseArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// postgres://user@host/db, sqlite://file.db (created if missing) or sqlite::memory:.
    #[arg(
        long,
        env = "HIXBUS_REGISTRY_DATABASE_URL",
        default_value = "sqlite://hixbus-registry.db"
    )]
    database: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "HIXBUS_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Level for subjects without their own, until set with PUT /config.
    #[arg(
        long,
        env = "HIXBUS_REGISTRY_DEFAULT_COMPATIBILITY",
        default_value = "BACKWARD"
    )]
    default_compatibility: String,
    /// Register every hixbus event schema on start (dev and demo setups; production registers
    /// through the compatibility gate, `hixbus schemas register`).
    #[arg(long, env = "HIXBUS_REGISTRY_REGISTER_CATALOG")]
    register_catalog: bool,
    /// The organizations file. With it every request authenticates (Bearer key, or Basic
    /// ORGANIZATION:KEY), every organization may read, and only operators may register, change
    /// compatibility or delete. Without it the registry is open to anyone who reaches it.
    #[arg(long, env = "HIXBUS_REGISTRY_ORGANIZATIONS")]
    organizations: Option<PathBuf>,
}

pub async fn run(cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegistryCommand::Serve(args) => serve(args).await,
        RegistryCommand::Migrate(args) => {
            let store = Store::connect(&args.database).await?;
            store.migrate().await?;
            println!("registry tables are ready in {}", redact(&args.database));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let level: CompatibilityLevel = args
        .default_compatibility
        .parse()
        .map_err(|e| anyhow::anyhow!("--default-compatibility: {e}"))?;
    let mut config = RegistryConfig::new(args.listen, &args.db.database);
    config.default_compatibility = level;
    if let Some(path) = &args.organizations {
        if args.register_catalog {
            anyhow::bail!(
                "--register-catalog needs an open registry; with --organizations, register with `hixbus schemas register --registry-auth OPERATOR:KEY`"
            );
        }
        config.organizations = Some(Arc::new(hixbus_service::load_directory(path)?));
    }
    let server = RegistryServer::build(config)
        .await?
        .map_app(hixbus_service::metrics::measured);
    let url = server.url();
    tracing::info!(%url, database = %redact(&args.db.database), "schema registry listening");
    let serving = tokio::spawn(server.run_until(hixbus_service::shutdown_signal()));
    if args.register_catalog {
        let client = RegistryClient::new(&url)?;
        let registered = gate::register(&client, Catalog::embedded()).await?;
        println!("registered {} hixbus event schemas", registered.len());
    }
    println!("schema registry listening on {url}  (try: curl {url}/subjects)");
    serving.await??;
    Ok(ExitCode::SUCCESS)
}
