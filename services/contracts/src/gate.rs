//! The compatibility gate: checks or registers a catalog's schemas against a registry, so a
//! breaking schema change fails CI (or a deploy) before any producer writes with it.

use hixbus_registry_client::{CompatibilityError, RegisterError, RegistryClient};

use crate::catalog::Catalog;

/// What the registry says about one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Compatible with the subject's history under its compatibility level.
    Compatible,
    /// The subject does not exist yet; registering will create version 1.
    NewSubject,
    /// The registry refused it, with its reasons.
    Incompatible(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectReport {
    pub event: String,
    pub subject: String,
    pub verdict: Verdict,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{subject}: {source}")]
    Check {
        subject: String,
        source: CompatibilityError,
    },
    #[error("{subject}: cannot set compatibility level: {source}")]
    Configure {
        subject: String,
        source: hixbus_registry_client::ApiError,
    },
    #[error("{subject}: {source}")]
    Register {
        subject: String,
        source: RegisterError,
    },
}

/// Asks the registry whether each schema of `catalog` could be registered now.
pub async fn check(
    registry: &RegistryClient,
    catalog: &Catalog,
) -> Result<Vec<SubjectReport>, GateError> {
    let mut reports = Vec::new();
    for entry in catalog.entries() {
        let verdict = match registry
            .check_compatibility(&entry.subject, None, &entry.schema_json)
            .await
        {
            Ok(report) if report.is_compatible => Verdict::Compatible,
            Ok(report) => Verdict::Incompatible(report.messages),
            Err(CompatibilityError::SubjectNotFound) => Verdict::NewSubject,
            Err(CompatibilityError::InvalidSchema(message)) => Verdict::Incompatible(vec![message]),
            Err(source) => {
                return Err(GateError::Check {
                    subject: entry.subject.clone(),
                    source,
                });
            }
        };
        // A subject that has never been registered is reported as new even though the registry
        // answers "compatible" (there is nothing to be incompatible with).
        let verdict = match verdict {
            Verdict::Compatible if is_new(registry, &entry.subject).await => Verdict::NewSubject,
            other => other,
        };
        reports.push(SubjectReport {
            event: entry.name.clone(),
            subject: entry.subject.clone(),
            verdict,
        });
    }
    Ok(reports)
}

async fn is_new(registry: &RegistryClient, subject: &str) -> bool {
    matches!(
        registry.versions(subject).await,
        Err(e) if e.code() == Some(40401)
    )
}

/// Holds every subject to the catalog's compatibility level, then registers every schema;
/// returns `(subject, id)` pairs. Stops at the first refusal, so a partly incompatible catalog is
/// reported rather than half-applied silently.
pub async fn register(
    registry: &RegistryClient,
    catalog: &Catalog,
) -> Result<Vec<(String, u32)>, GateError> {
    let mut ids = Vec::new();
    for entry in catalog.entries() {
        registry
            .set_compatibility_level(Some(&entry.subject), catalog.compatibility())
            .await
            .map_err(|source| GateError::Configure {
                subject: entry.subject.clone(),
                source,
            })?;
        let id = registry
            .register(&entry.subject, &entry.schema_json)
            .await
            .map_err(|source| GateError::Register {
                subject: entry.subject.clone(),
                source,
            })?;
        ids.push((entry.subject.clone(), id));
    }
    Ok(ids)
}
