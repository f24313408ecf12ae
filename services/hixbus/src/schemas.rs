use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hixbus_contracts::gate::{self, Verdict};
use hixbus_contracts::registry::RegistryClient;
use hixbus_contracts::{Catalog, docs};

use crate::bus_args::{RegistryAccess, registry_client};

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// List each event with its topic and subject.
    List(SourceArgs),
    /// Write the event reference (docs/events.md) from the schemas.
    Doc {
        #[command(flatten)]
        source: SourceArgs,
        /// Where to write it; "-" for standard output.
        #[arg(long, default_value = "docs/events.md")]
        output: PathBuf,
        /// Fail instead of writing if the file is not up to date (for CI).
        #[arg(long)]
        check: bool,
    },
    /// Ask a registry whether each schema can be registered; non-zero exit if any cannot.
    Check(RegistryArgs),
    /// Register each schema with a registry (idempotent).
    Register(RegistryArgs),
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A schemas/ directory to read instead of the schemas this binary was built with.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[arg(
        long,
        env = "HIXBUS_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    registry_url: String,
    #[command(flatten)]
    registry_access: RegistryAccess,
    #[command(flatten)]
    source: SourceArgs,
}

impl SourceArgs {
    fn load(&self) -> anyhow::Result<Catalog> {
        match &self.dir {
            Some(dir) => {
                Catalog::load_dir(dir).with_context(|| format!("loading {}", dir.display()))
            }
            None => Ok(Catalog::embedded().clone()),
        }
    }
}

pub async fn run(cmd: SchemasCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemasCommand::List(source) => {
            let catalog = source.load()?;
            for e in catalog.entries() {
                println!("{:<24} {:<22} {}", e.name, e.topic, e.subject);
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemasCommand::Doc {
            source,
            output,
            check,
        } => doc(&source.load()?, &output, check),
        SchemasCommand::Check(args) => check(&args).await,
        SchemasCommand::Register(args) => register(&args).await,
    }
}

fn doc(catalog: &Catalog, output: &PathBuf, check: bool) -> anyhow::Result<ExitCode> {
    let rendered = docs::render_markdown(catalog);
    if output.as_os_str() == "-" {
        print!("{rendered}");
        return Ok(ExitCode::SUCCESS);
    }
    if check {
        let current = std::fs::read_to_string(output).unwrap_or_default();
        if current != rendered {
            eprintln!(
                "{} is out of date with schemas/: run `hixbus schemas doc`",
                output.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("{} is up to date", output.display());
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(output, rendered).with_context(|| format!("writing {}", output.display()))?;
    println!("wrote {}", output.display());
    Ok(ExitCode::SUCCESS)
}

fn client(args: &RegistryArgs) -> anyhow::Result<RegistryClient> {
    registry_client(&args.registry_url, &args.registry_access)
}

async fn check(args: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let catalog = args.source.load()?;
    let reports = gate::check(&client(args)?, &catalog).await?;
    let mut failed = 0;
    for report in &reports {
        match &report.verdict {
            Verdict::Compatible => println!("ok          {}", report.subject),
            Verdict::NewSubject => println!("new         {}", report.subject),
            Verdict::Incompatible(messages) => {
                failed += 1;
                println!("INCOMPATIBLE {}", report.subject);
                for m in messages {
                    println!("    {m}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} schemas would break their consumers",
            reports.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "all {} schemas are compatible with {}",
        reports.len(),
        args.registry_url
    );
    Ok(ExitCode::SUCCESS)
}

async fn register(args: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let catalog = args.source.load()?;
    for (subject, id) in gate::register(&client(args)?, &catalog).await? {
        println!("{id:>6}  {subject}");
    }
    Ok(ExitCode::SUCCESS)
}
