//! `hixbus`: one binary for every hixbus process and operator task.

mod registry;
mod schemas;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hixbus", version, about = "hixbus: a health information exchange bus on Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run or prepare the Confluent-compatible schema registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Inspect, document, check and register the event schemas.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Registry(cmd) => registry::run(cmd).await,
        Command::Schemas(cmd) => schemas::run(cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
