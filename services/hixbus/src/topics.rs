//! `hixbus topics`: the catalog's topics, as declared in `infra/topics.toml`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hixbus_bus::topics::{self, Created};
use hixbus_contracts::Catalog;

use crate::bus_args::BusArgs;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic and dead-letter topic the file declares (existing ones are kept).
    Create {
        /// Topics file; defaults to the infra/topics.toml this binary was built with.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Override every topic's replication factor (3 for production clusters).
        #[arg(long)]
        replication_factor: Option<i32>,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Print the topics the file declares, without touching a cluster.
    Plan {
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write the script that gives each service and each Kafka-facing organization its own
    /// SCRAM principal and ACLs, for Kafka's own tools (docs/operations.md).
    Acls {
        /// Topics file; defaults to the infra/topics.toml this binary was built with.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The organizations file: insurers and researchers get principals.
        #[arg(long, env = "HIXBUS_ORGANIZATIONS")]
        organizations: PathBuf,
        /// The research projects file: each researcher reads its projects' topics.
        #[arg(long, env = "HIXBUS_PROJECTS")]
        projects: Option<PathBuf>,
        /// Where to write the script (standard output without it).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn load(file: Option<&PathBuf>) -> anyhow::Result<Vec<topics::TopicSpec>> {
    let text = match file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => topics::EMBEDDED.to_owned(),
    };
    Ok(topics::specs(&text, Catalog::embedded())?)
}

pub async fn run(cmd: TopicsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TopicsCommand::Plan { file } => {
            for spec in load(file.as_ref())? {
                println!(
                    "{}  partitions={} replication={} {:?}",
                    spec.name, spec.partitions, spec.replication_factor, spec.config
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Acls {
            file,
            organizations,
            projects,
            output,
        } => {
            let directory = hixbus_service::load_directory(&organizations)?;
            let projects = match projects {
                Some(path) => hixbus_research::projects::load(&path, &directory)?,
                None => Vec::new(),
            };
            let principals = crate::acls::plan(&load(file.as_ref())?, &directory, &projects);
            let script = crate::acls::script(&principals);
            match output {
                Some(path) => {
                    std::fs::write(&path, script)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!(
                        "wrote {} principals and their ACLs to {}",
                        principals.len(),
                        path.display()
                    );
                }
                None => print!("{script}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Create {
            file,
            replication_factor,
            bus,
        } => {
            let mut specs = load(file.as_ref())?;
            if let Some(rf) = replication_factor {
                specs.iter_mut().for_each(|s| s.replication_factor = rf);
            }
            let outcome = topics::create(&bus.kafka("hixbus-topics"), &specs).await?;
            for (topic, created) in outcome {
                let what = match created {
                    Created::New => "created",
                    Created::AlreadyExisted => "exists",
                };
                println!("{what:8} {topic}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
