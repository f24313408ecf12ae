//! `hixbus tail`: a topic's events as JSON lines, for people and for `jq`.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use clap::Args;
use hixbus_bus::reader::{OwnedRecord, Start, TopicReader};
use hixbus_contracts::codec::{Codec, SchemaIdStrategy};
use serde_json::{Value, json};

use crate::bus_args::BusArgs;
use crate::operator::OperatorArgs;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic to read, e.g. prescriptions (or prescriptions.dlq).
    topic: String,
    /// Start at the oldest record instead of only printing new ones.
    #[arg(long)]
    from_beginning: bool,
    /// Stop once every partition has been read to its current end.
    #[arg(long)]
    exit_at_end: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_records: Option<u64>,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    operator: OperatorArgs,
}

pub async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let codec = args.bus.codec(SchemaIdStrategy::Lookup)?;
    let audit = args.operator.open("tail.read").await?;
    let start = if args.from_beginning {
        Start::Beginning
    } else {
        Start::End
    };
    let mut reader = TopicReader::open(&args.bus.kafka("hixbus-tail"), &args.topic, start)?;
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        if args.max_records.is_some_and(|max| printed >= max) {
            break;
        }
        let next = tokio::select! {
            next = reader.next(args.exit_at_end) => next,
            () = hixbus_service::shutdown_signal() => break,
        };
        let Some(record) = next else { break };
        let record = record?;
        audit.read(&record).await?;
        let line = describe(&codec, &record).await;
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    audit.ship(&args.bus).await;
    Ok(ExitCode::SUCCESS)
}

/// One record as a JSON object: where it is, its headers and the decoded event, or why it
/// cannot be decoded (tail never stops on a bad record).
pub async fn describe(codec: &Codec, record: &OwnedRecord) -> Value {
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    let mut line = json!({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key.as_deref().map(String::from_utf8_lossy),
        "headers": headers,
    });
    let decoded = match record.payload.as_deref() {
        None => json!({ "error": "record has no value" }),
        Some(payload) => match codec.decode(payload).await {
            Ok(Ok(decoded)) => json!({ "schema_id": decoded.schema_id, "event": decoded.event }),
            Ok(Err(e)) => json!({
                "error": e.to_string(),
                "payload_base64": base64::engine::general_purpose::STANDARD.encode(payload),
            }),
            Err(e) => json!({ "error": e.to_string(), "transient": true }),
        },
    };
    if let (Value::Object(line), Value::Object(decoded)) = (&mut line, decoded) {
        line.extend(decoded);
    }
    line
}
