//! `hixbus audit verify`: checks the patients' access trail kept by the patient record service
//! (docs/patients.md, "Who saw my data"). Exit 0 and each chain's head when every chain is whole;
//! exit 1 naming the first entry that was altered, removed or reordered.

use std::process::ExitCode;

use clap::Subcommand;
use hixbus_patient::trail::{self, Verdict};
use hixbus_storage::Database;
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk every hash chain of the trail and report the first broken entry.
    Verify {
        /// The patient record service's database (its `database_url`).
        #[arg(long, env = "HIXBUS_DATABASE_URL")]
        database_url: SecretString,
    },
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { database_url } => {
            let db = Database::connect(database_url.expose_secret()).await?;
            match trail::verify(&db).await? {
                Verdict::Intact(heads) => {
                    let entries: i64 = heads.iter().map(|(_, n, _)| n).sum();
                    println!(
                        "the access trail is intact: {entries} entries in {} chains",
                        heads.len()
                    );
                    for (chain, n, head) in heads {
                        println!("  chain {chain}: {n} entries, head {head}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Broken {
                    problem, event_id, ..
                } => {
                    match event_id {
                        Some(id) => eprintln!("the access trail is broken: {problem} (event {id})"),
                        None => eprintln!("the access trail is broken: {problem}"),
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
