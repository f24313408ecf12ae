use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use hixbus_contracts::registry::{RegistryClient, SubjectVersion};
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
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "from_schemas_log"])))]
pub struct ImportArgs {
    /// The registry to copy from (its REST API).
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// Its credentials, USER:PASSWORD (HTTP Basic: a Confluent Cloud API key and secret).
    #[arg(long, value_name = "USER:PASSWORD", env = "HIXBUS_IMPORT_FROM_AUTH", value_parser = crate::bus_args::parse_credentials, requires = "from")]
    from_auth: Option<crate::bus_args::RegistryCredentials>,
    /// Or a Confluent registry's backup: its `_schemas` topic as Confluent's backup procedure
    /// writes it (`kafka-console-consumer --topic _schemas --from-beginning --property
    /// print.key=true`: one record per line, key TAB value, `null` for a tombstone).
    #[arg(long, value_name = "FILE")]
    from_schemas_log: Option<PathBuf>,
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

/// What an import copies: live schema versions, the global compatibility level and the levels
/// subjects set themselves.
#[derive(Debug, Default)]
struct Export {
    schemas: Vec<SubjectVersion>,
    global_level: Option<String>,
    subject_levels: BTreeMap<String, String>,
}

/// The source's live schemas, oldest id first, into the target in IMPORT mode; then the target
/// is READWRITE again (also when the import fails half-way, so it is not left taking ids).
async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (mut export, source) = match (&args.from, &args.from_schemas_log) {
        (Some(url), _) => (
            read_registry(url, args.from_auth.as_ref()).await?,
            url.clone(),
        ),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (schemas_log::read(&text)?, path.display().to_string())
        }
        (None, None) => anyhow::bail!("give --from URL or --from-schemas-log FILE"),
    };
    if let Some(s) = export
        .schemas
        .iter()
        .find(|s| s.schema_type.as_deref().is_some_and(|t| t != "AVRO"))
    {
        anyhow::bail!(
            "{} version {} is a {} schema; hixbus registries hold Avro only",
            s.subject,
            s.version,
            s.schema_type.as_deref().unwrap_or_default()
        );
    }
    // A schema is registered after what it references, so it has a higher id: ids ascending
    // import each reference before its users.
    export
        .schemas
        .sort_by(|a, b| (a.id, &a.subject, a.version).cmp(&(b.id, &b.subject, b.version)));

    let to = crate::bus_args::registry_client(&args.to, &args.to_access)?;
    to.set_mode(None, "IMPORT", args.force).await?;
    let copied = async {
        for s in &export.schemas {
            to.import(&s.subject, &s.schema, &s.references, s.id, s.version)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("{} version {} (id {}): {e}", s.subject, s.version, s.id)
                })?;
        }
        if let Some(level) = &export.global_level {
            to.set_compatibility_level(None, level).await?;
        }
        for (subject, level) in &export.subject_levels {
            to.set_compatibility_level(Some(subject), level).await?;
        }
        anyhow::Ok(())
    }
    .await;
    to.set_mode(None, "READWRITE", false).await?;
    copied?;
    println!(
        "imported {} schema versions with their ids and versions, and {} subject compatibility levels, from {source}",
        export.schemas.len(),
        export.subject_levels.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Every live version of every subject, and the compatibility levels, over the REST API.
async fn read_registry(
    url: &str,
    auth: Option<&crate::bus_args::RegistryCredentials>,
) -> anyhow::Result<Export> {
    use hixbus_contracts::registry::VersionRef;
    use secrecy::ExposeSecret;
    let mut from = RegistryClient::new(url)?;
    if let Some(c) = auth {
        from = from.with_basic_auth(&c.org, c.key.expose_secret());
    }
    let mut export = Export {
        global_level: Some(from.compatibility_level(None).await?),
        ..Export::default()
    };
    for subject in from.subjects().await? {
        for version in from.versions(&subject).await? {
            export
                .schemas
                .push(from.version(&subject, VersionRef::Number(version)).await?);
        }
        if let Some(level) = from.subject_compatibility_level(&subject).await? {
            export.subject_levels.insert(subject, level);
        }
    }
    Ok(export)
}

/// Confluent's registry keeps its state in the `_schemas` topic; its documented backup is that
/// topic dumped by `kafka-console-consumer` with keys. Replaying the log in order (a later record
/// for a key replaces the earlier, a `null` value removes it) gives the registry's state.
mod schemas_log {
    use std::collections::BTreeMap;

    use anyhow::Context;
    use hixbus_contracts::registry::SubjectVersion;
    use serde::Deserialize;
    use serde_json::Value;

    use super::Export;

    /// A backup is a few MB at most; a line this long is not one of its records.
    const MAX_LINE_BYTES: usize = 8 << 20;

    #[derive(Deserialize)]
    struct Key {
        keytype: String,
        subject: Option<String>,
        version: Option<i64>,
    }

    #[derive(Deserialize)]
    struct SchemaValue {
        subject: String,
        version: i32,
        id: u32,
        schema: String,
        #[serde(default, rename = "schemaType")]
        schema_type: Option<String>,
        #[serde(default)]
        references: Vec<Value>,
        #[serde(default)]
        deleted: bool,
    }

    #[derive(Deserialize)]
    struct ConfigValue {
        #[serde(rename = "compatibilityLevel")]
        compatibility_level: String,
    }

    pub(super) fn read(text: &str) -> anyhow::Result<Export> {
        let mut schemas: BTreeMap<(String, i64), SchemaValue> = BTreeMap::new();
        let mut levels: BTreeMap<Option<String>, String> = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let at = || format!("line {}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            anyhow::ensure!(
                line.len() <= MAX_LINE_BYTES,
                "{}: longer than {MAX_LINE_BYTES} bytes",
                at()
            );
            let (key, value) = line.split_once('\t').with_context(|| {
                format!(
                    "{}: not KEY<TAB>VALUE (dump with --property print.key=true)",
                    at()
                )
            })?;
            let key: Key = serde_json::from_str(key).with_context(at)?;
            let value = value.trim_end();
            let tombstone = value == "null";
            match key.keytype.as_str() {
                "SCHEMA" => {
                    let (Some(subject), Some(version)) = (key.subject, key.version) else {
                        anyhow::bail!("{}: a SCHEMA key without subject or version", at());
                    };
                    if tombstone {
                        schemas.remove(&(subject, version));
                    } else {
                        let value: SchemaValue = serde_json::from_str(value).with_context(at)?;
                        anyhow::ensure!(
                            value.subject == subject && i64::from(value.version) == version,
                            "{}: the value is {} version {}, the key {subject} version {version}",
                            at(),
                            value.subject,
                            value.version
                        );
                        schemas.insert((subject, version), value);
                    }
                }
                "CONFIG" if tombstone => {
                    levels.remove(&key.subject);
                }
                "CONFIG" => {
                    let value: ConfigValue = serde_json::from_str(value).with_context(at)?;
                    levels.insert(key.subject, value.compatibility_level);
                }
                // Soft deletes also rewrite each SCHEMA record with `deleted`, permanent ones
                // tombstone them; modes are the target's own business; NOOP keeps the log alive.
                _ => {}
            }
        }
        let schemas: Vec<SubjectVersion> = schemas
            .into_values()
            .filter(|s| !s.deleted)
            .map(|s| SubjectVersion {
                subject: s.subject,
                version: s.version,
                id: s.id,
                schema: s.schema,
                schema_type: s.schema_type,
                references: s.references,
            })
            .collect();
        let global_level = levels.remove(&None);
        // A level for a subject that no longer has a live version is dropped, as over REST.
        let subject_levels = levels
            .into_iter()
            .filter_map(|(subject, level)| Some((subject?, level)))
            .filter(|(subject, _)| schemas.iter().any(|s| &s.subject == subject))
            .collect();
        Ok(Export {
            schemas,
            global_level,
            subject_levels,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_log_replays_to_the_live_state() {
            let log = [
                r#"{"keytype":"NOOP","magic":0}	null"#,
                r#"{"keytype":"SCHEMA","subject":"a-value","version":1,"magic":1}	{"subject":"a-value","version":1,"id":1,"schema":"\"string\"","deleted":false}"#,
                r#"{"keytype":"SCHEMA","subject":"a-value","version":2,"magic":1}	{"subject":"a-value","version":2,"id":3,"schema":"\"int\"","deleted":false}"#,
                r#"{"keytype":"SCHEMA","subject":"b-value","version":1,"magic":1}	{"subject":"b-value","version":1,"id":2,"schema":"\"long\"","deleted":false}"#,
                r#"{"keytype":"CONFIG","subject":null,"magic":0}	{"compatibilityLevel":"FULL"}"#,
                r#"{"keytype":"CONFIG","subject":"a-value","magic":0}	{"compatibilityLevel":"NONE"}"#,
                // a-value v2 soft-deleted; b-value permanently deleted (with its level).
                r#"{"keytype":"SCHEMA","subject":"a-value","version":2,"magic":1}	{"subject":"a-value","version":2,"id":3,"schema":"\"int\"","deleted":true}"#,
                r#"{"keytype":"CONFIG","subject":"b-value","magic":0}	{"compatibilityLevel":"NONE"}"#,
                r#"{"keytype":"SCHEMA","subject":"b-value","version":1,"magic":1}	null"#,
            ]
            .join("\n");
            let export = read(&log).unwrap();
            let live: Vec<_> = export
                .schemas
                .iter()
                .map(|s| (s.subject.as_str(), s.version, s.id))
                .collect();
            assert_eq!(live, [("a-value", 1, 1)]);
            assert_eq!(export.global_level.as_deref(), Some("FULL"));
            assert_eq!(
                export.subject_levels.into_iter().collect::<Vec<_>>(),
                [("a-value".to_owned(), "NONE".to_owned())]
            );
        }

        #[test]
        fn a_line_that_is_not_a_keyed_record_is_named() {
            let err = read("{\"keytype\":\"SCHEMA\"}").unwrap_err().to_string();
            assert!(err.contains("line 1") && err.contains("print.key"), "{err}");
            let err = read("{\"keytype\":\"SCHEMA\",\"subject\":\"a\",\"version\":1}\t{\"subject\":\"b\",\"version\":1,\"id\":1,\"schema\":\"1\"}")
                .unwrap_err()
                .to_string();
            assert!(err.contains("the key a version 1"), "{err}");
        }
    }
}
