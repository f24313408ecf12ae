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
    /// Copy every live schema of another registry (Confluent's, or any with its REST API) into
    /// this one with the ids and versions it had there, so records already written in Confluent's
    /// wire format resolve unchanged; compatibility levels come along.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The registry to copy from.
    #[arg(long, value_name = "URL")]
    from: String,
    /// Its credentials, USER:PASSWORD (HTTP Basic: a Confluent Cloud API key and secret).
    #[arg(long, value_name = "USER:PASSWORD", env = "HIXBUS_IMPORT_FROM_AUTH", value_parser = crate::bus_args::parse_credentials)]
    from_auth: Option<crate::bus_args::RegistryCredentials>,
    /// The hixbus registry to copy into: empty, or `--force`.
    #[arg(long, value_name = "URL", env = "HIXBUS_REGISTRY_URL")]
    to: String,
    #[command(flatten)]
    to_access: crate::bus_args::RegistryAccess,
    /// Import although the target already has schemas (an id taken by another schema is still
    /// refused).
    #[arg(long)]
    force: bool,
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
        RegistryCommand::Import(args) => import(args).await,
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

/// The source's live schemas, oldest id first, into the target in IMPORT mode; then the target
/// is READWRITE again (also when the import fails half-way, so it is not left taking ids).
async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use hixbus_contracts::registry::VersionRef;
    use secrecy::ExposeSecret;
    let mut from = RegistryClient::new(&args.from)?;
    if let Some(c) = &args.from_auth {
        from = from.with_basic_auth(&c.org, c.key.expose_secret());
    }
    let to = crate::bus_args::registry_client(&args.to, &args.to_access)?;

    let mut schemas = Vec::new();
    for subject in from.subjects().await? {
        for version in from.versions(&subject).await? {
            let found = from.version(&subject, VersionRef::Number(version)).await?;
            if found.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
                anyhow::bail!(
                    "{subject} version {version} is a {} schema; hixbus registries hold Avro only",
                    found.schema_type.unwrap_or_default()
                );
            }
            if !found.references.is_empty() {
                anyhow::bail!(
                    "{subject} version {version} references other schemas, which this registry does not take yet"
                );
            }
            schemas.push(found);
        }
    }
    schemas.sort_by(|a, b| (a.id, &a.subject, a.version).cmp(&(b.id, &b.subject, b.version)));

    to.set_mode(None, "IMPORT", args.force).await?;
    let copied = async {
        for s in &schemas {
            to.import(&s.subject, &s.schema, s.id, s.version)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("{} version {} (id {}): {e}", s.subject, s.version, s.id)
                })?;
        }
        let global = from.compatibility_level(None).await?;
        to.set_compatibility_level(None, &global).await?;
        let mut subjects: Vec<&str> = schemas.iter().map(|s| s.subject.as_str()).collect();
        subjects.dedup();
        let mut levels = 0;
        for subject in subjects {
            if let Some(level) = from.subject_compatibility_level(subject).await? {
                to.set_compatibility_level(Some(subject), &level).await?;
                levels += 1;
            }
        }
        anyhow::Ok(levels)
    }
    .await;
    to.set_mode(None, "READWRITE", false).await?;
    let levels = copied?;
    println!(
        "imported {} schema versions with their ids and versions, and {levels} subject compatibility levels, from {}",
        schemas.len(),
        args.from
    );
    Ok(ExitCode::SUCCESS)
}
