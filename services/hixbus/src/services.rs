//! `hixbus serve …` and `hixbus orgs …`: each service as its own process (one per container in
//! production), and the organization keys they authenticate with.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hixbus::stack::Kind;
use hixbus_access::codes::CodeKeys;
use hixbus_access::{DEFAULT_KEY_VALIDITY_DAYS, MAX_KEY_VALIDITY_DAYS, digest};
use hixbus_service::CancellationToken;

use hixbus_service::shutdown_signal;

/// `hixbus serve SERVICE`: one service, configured by a file and `HIXBUS_…` variables.
#[derive(Debug, Args)]
#[command(after_long_help = settings_help())]
pub struct ServeArgs {
    /// The service to run.
    service: Kind,
    /// A TOML file with its settings (keys as in `--help`, lower case without the prefix;
    /// bus settings under [bus]). Variables override the file.
    #[arg(long, env = "HIXBUS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ServeArgs {
    pub fn service(&self) -> Kind {
        self.service
    }
}

/// Each service's settings, as the variables that set them.
fn settings_help() -> String {
    let mut help =
        String::from("Settings (in the file, or as variables; secrets are never printed):\n");
    for kind in Kind::ALL {
        let names: Vec<String> = kind
            .env_names()
            .iter()
            .map(|n| format!("[env: {n}=]"))
            .collect();
        help.push_str(&format!("  {kind}:\n    {}\n", names.join("\n    ")));
    }
    help
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let service = args
        .service
        .deployed(args.config.as_deref())
        .await
        .with_context(|| format!("starting {}", args.service))?;
    println!("{} listening on {}", service.name(), service.url());
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    service.run_until(stop).await?;
    Ok(ExitCode::SUCCESS)
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
            let directory = hixbus_service::load_directory(&organizations)?;
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
