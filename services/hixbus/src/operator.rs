//! Operators read patient data too: `hixbus tail` and `hixbus dlq list|show` print records straight
//! off the topics. Every record they print is first written to an audit log, under the
//! operator's name, so a patient's trail includes reads by the people who run the bus. A record
//! that cannot be audited is not printed.

use std::path::PathBuf;

use clap::Args;
use hixbus_bus::Publisher;
use hixbus_bus::reader::OwnedRecord;
use hixbus_contracts::codec::SchemaIdStrategy;
use hixbus_storage::{AuditLog, Database};

use crate::bus_args::BusArgs;

#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Who is reading, for the audit log [default: $USER].
    #[arg(long, env = "HIXBUS_OPERATOR")]
    operator: Option<String>,
    /// Where operator reads of patient data are audited (postgres:// or sqlite://)
    /// [default: sqlite://~/.local/state/hixbus/operator-audit.db].
    #[arg(long, env = "HIXBUS_AUDIT_DATABASE")]
    audit_database: Option<String>,
}

/// The audit log of one operator's session.
#[derive(Debug)]
pub struct OperatorAudit {
    log: AuditLog,
    /// Recorded as the reading organization: `operator:<name>`.
    reader: String,
    action: &'static str,
}

impl OperatorArgs {
    /// Opens the audit log for reads recorded as `action` (e.g. `tail.read`).
    pub async fn open(&self, action: &'static str) -> anyhow::Result<OperatorAudit> {
        let name = self
            .operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("who is reading? pass --operator NAME (or set HIXBUS_OPERATOR)")
            })?;
        let url = match &self.audit_database {
            Some(url) => url.clone(),
            None => default_database()?,
        };
        let db = Database::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the operator audit log {url}: {e}"))?;
        Ok(OperatorAudit {
            log: AuditLog::new(db).await?,
            reader: format!("operator:{name}"),
            action,
        })
    }
}

impl OperatorAudit {
    /// Records that the operator is about to see `record`.
    pub async fn read(&self, record: &OwnedRecord) -> anyhow::Result<()> {
        let patient = record.key.as_deref().map(String::from_utf8_lossy);
        let position = format!("{}/{}/{}", record.topic, record.partition, record.offset);
        self.read_at(&position, patient.as_deref()).await
    }

    /// Records that the operator is about to see the record at `position` (topic/partition/
    /// offset) about `patient` (its key).
    pub async fn read_at(&self, position: &str, patient: Option<&str>) -> anyhow::Result<()> {
        self.log
            .record(
                &self.reader,
                self.action,
                position,
                patient.unwrap_or_default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot audit the read of {position}, not shown: {e}"))
    }
}

impl OperatorAudit {
    /// Ships what this session recorded to the patients' access trail (the `audit` topic), as
    /// every service ships its log. If the bus cannot take it now, the rows wait in the log and
    /// go with the next command that ships; nothing is lost, and the reads were shown already.
    pub async fn ship(&self, bus: &BusArgs) {
        let outcome = async {
            let codec = bus.codec(SchemaIdStrategy::Lookup)?;
            let publisher = Publisher::new(&bus.kafka("hixbus-operator"), codec)?;
            let directory = hixbus_access::Directory::default();
            loop {
                let shipped =
                    hixbus_service::trail::ship_once("operator", &self.log, &publisher, &directory)
                        .await
                        .map_err(|e| anyhow::anyhow!(e))?;
                if shipped == 0 {
                    return anyhow::Ok(());
                }
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), outcome).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "hixbus: the reads were audited locally; shipping them to the patients' trail failed ({e}) and is retried by the next command"
            ),
            Err(_) => eprintln!(
                "hixbus: the reads were audited locally; shipping them to the patients' trail timed out and is retried by the next command"
            ),
        }
    }
}

fn default_database() -> anyhow::Result<String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("HOME is not set: pass --audit-database"))?;
    let dir = home.join(".local/state/hixbus");
    std::fs::create_dir_all(&dir)?;
    Ok(format!(
        "sqlite://{}",
        dir.join("operator-audit.db").display()
    ))
}
