//! `hixbus dlq`: inspect dead letters and put them back once the cause is fixed.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use hixbus_bus::{Publisher, dlq};
use hixbus_contracts::codec::SchemaIdStrategy;

use crate::bus_args::BusArgs;
use crate::operator::OperatorArgs;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter of TOPIC: where it came from, when, and why.
    List {
        /// The source topic (its dead letters are on TOPIC.dlq).
        topic: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// One dead letter in full: cause, origin, headers, and the event if it decodes.
    Show {
        topic: String,
        #[command(flatten)]
        at: Position,
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Republish dead letters to their source topic: one (--partition/--offset), or every one
    /// not redriven before.
    Redrive {
        topic: String,
        #[arg(long, requires = "offset")]
        partition: Option<i32>,
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
        #[command(flatten)]
        bus: BusArgs,
    },
}

#[derive(Debug, Args)]
pub struct Position {
    /// Partition of the .dlq topic.
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Offset in the .dlq topic (as `dlq list` prints it).
    #[arg(long)]
    offset: i64,
}

pub async fn run(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::List {
            topic,
            json,
            bus,
            operator,
        } => {
            let audit = operator.open("dlq.list").await?;
            let letters = dlq::list(&bus.kafka("hixbus-dlq"), &topic).await?;
            let dlq_topic = hixbus_bus::dlq_topic(&topic);
            for l in &letters {
                let position = format!("{dlq_topic}/{}/{}", l.dlq_partition, l.dlq_offset);
                audit.read_at(&position, l.key.as_deref()).await?;
            }
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                println!(
                    "{} dead letters on {}",
                    letters.len(),
                    hixbus_bus::dlq_topic(&topic)
                );
                for l in &letters {
                    println!(
                        "{}/{}  from {}/{}/{}  {}  {}  {}: {}",
                        l.dlq_partition,
                        l.dlq_offset,
                        l.source_topic.as_deref().unwrap_or("?"),
                        opt(l.source_partition),
                        opt(l.source_offset),
                        l.failed_at.as_deref().unwrap_or("?"),
                        l.event_type.as_deref().unwrap_or("?"),
                        l.cause_kind.as_deref().unwrap_or("?"),
                        l.cause.as_deref().unwrap_or("?"),
                    );
                }
            }
            audit.ship(&bus).await;
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show {
            topic,
            at,
            bus,
            operator,
        } => {
            let audit = operator.open("dlq.show").await?;
            let config = bus.kafka("hixbus-dlq");
            let record = dlq::find(&config, &topic, at.partition, at.offset).await?;
            audit.read(&record).await?;
            let codec = bus.codec(SchemaIdStrategy::Lookup)?;
            let letter = dlq::DeadLetter::from_record(&record);
            let mut shown = serde_json::to_value(&letter)?;
            shown["decoded"] = dlq::describe_payload(&codec, &record).await;
            println!("{}", serde_json::to_string_pretty(&shown)?);
            audit.ship(&bus).await;
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Redrive {
            topic,
            partition,
            offset,
            bus,
        } => {
            let config = bus.kafka("hixbus-dlq");
            let publisher = Publisher::new(&config, bus.codec(SchemaIdStrategy::Lookup)?)?;
            let redriven = match (partition, offset) {
                (Some(p), Some(o)) => {
                    vec![dlq::redrive_one(&config, &publisher, &topic, p, o).await?]
                }
                _ => dlq::redrive_pending(&config, &publisher, &topic).await?,
            };
            for r in &redriven {
                println!(
                    "redrove {}/{} -> {}/{}/{}",
                    r.dlq_partition, r.dlq_offset, r.to_topic, r.to_partition, r.to_offset
                );
            }
            println!("{} dead letters redriven", redriven.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}
