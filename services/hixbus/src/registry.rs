use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hixbus_schema_registry::domain::CompatibilityLevel;
use hixbus_schema_registry::store::Store;
use hixbus_schema_registry::{RegistryConfig, RegistryServer};

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
    #[arg(long, env = "HIXBUS_REGISTRY_DATABASE_URL", default_value = "sqlite://hixbus-registry.db")]
    database: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "HIXBUS_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Level for subjects without their own, until set with PUT /config.
    #[arg(long, env = "HIXBUS_REGISTRY_DEFAULT_COMPATIBILITY", default_value = "BACKWARD")]
    default_compatibility: String,
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
    let server = RegistryServer::build(config).await?;
    tracing::info!(url = %server.url(), database = %redact(&args.db.database), "schema registry listening");
    println!("schema registry listening on {}", server.url());
    server.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM (what container runtimes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Database URLs may carry passwords; logs and messages must not.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redact("postgres://u:secret@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact("sqlite://r.db"), "sqlite://r.db");
    }
}
