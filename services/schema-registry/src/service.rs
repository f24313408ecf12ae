//! Confluent's registry semantics on top of the store: idempotent registration, compatibility
//! gates, soft and permanent deletes, and the lookups clients make.

use std::collections::HashSet;

use apache_avro::Schema;

use crate::compat;
use crate::domain::{
    CompatibilityLevel, MAX_REFERENCED_SCHEMAS, Mode, ParsedSchema, SchemaReference, Subject,
    VersionSpec,
};
use crate::error::RegistryError;
use crate::store::{GLOBAL, Store, VersionRow};

/// How many times registration re-reads a subject after losing a race to another writer.
const MAX_REGISTER_ATTEMPTS: usize = 16;

#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
    default_level: CompatibilityLevel,
}

/// A schema as stored under a subject version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    pub subject: String,
    pub version: i64,
    pub id: i64,
    pub schema: String,
    pub references: Vec<SchemaReference>,
}

/// A schema as stored under a global id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaView {
    pub schema: String,
    pub references: Vec<SchemaReference>,
}

/// What a client submits: the schema text and what it says about it.
#[derive(Debug, Clone, Default)]
pub struct SchemaSubmission {
    pub schema: Option<String>,
    pub schema_type: Option<String>,
    /// As given: a version may be `-1`, the subject's latest.
    pub references: Vec<SchemaReference>,
    /// The id and version it had in another registry: given only in IMPORT mode.
    pub id: Option<i64>,
    pub version: Option<i64>,
}

impl Registry {
    pub fn new(store: Store, default_level: CompatibilityLevel) -> Self {
        Self {
            store,
            default_level,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Parses what a client sent, with the schemas its references reach.
    async fn parse(&self, submission: &SchemaSubmission) -> Result<ParsedSchema, RegistryError> {
        let text = submission.schema.as_deref().ok_or_else(|| {
            RegistryError::InvalidSchema("the request has no \"schema\" field".to_owned())
        })?;
        let (references, referenced) = self.resolve(&submission.references).await?;
        ParsedSchema::parse(
            text,
            submission.schema_type.as_deref(),
            references,
            &referenced,
        )
    }

    /// Pins each reference to a concrete version (`-1` is the latest live one) and collects the
    /// texts of every schema they reach, transitively, each once.
    async fn resolve(
        &self,
        references: &[SchemaReference],
    ) -> Result<(Vec<SchemaReference>, Vec<String>), RegistryError> {
        if references.len() > MAX_REFERENCED_SCHEMAS {
            return Err(RegistryError::InvalidSchema(format!(
                "{} references; at most {MAX_REFERENCED_SCHEMAS} are allowed",
                references.len()
            )));
        }
        let mut pinned = Vec::with_capacity(references.len());
        for reference in references {
            pinned.push(self.pin(reference).await?);
        }
        let mut seen = HashSet::new();
        let mut texts = Vec::new();
        let mut pending = pinned.clone();
        while let Some(reference) = pending.pop() {
            if !seen.insert((reference.subject.clone(), reference.version)) {
                continue;
            }
            if seen.len() > MAX_REFERENCED_SCHEMAS {
                return Err(RegistryError::InvalidSchema(format!(
                    "the references reach more than {MAX_REFERENCED_SCHEMAS} schemas"
                )));
            }
            let row = self.referenced_row(&reference).await?;
            texts.push(row.schema_text);
            pending.extend(row.references);
        }
        Ok((pinned, texts))
    }

    /// Checks a reference names something and gives it its concrete version.
    async fn pin(&self, reference: &SchemaReference) -> Result<SchemaReference, RegistryError> {
        if reference.name.trim().is_empty() || reference.name.len() > 1024 {
            return Err(RegistryError::InvalidSchema(
                "a reference needs the full name of the type it refers to".to_owned(),
            ));
        }
        let subject = Subject::parse(&reference.subject).map_err(|_| {
            RegistryError::InvalidSchema(format!(
                "reference {}: '{}' is not a subject name",
                reference.name, reference.subject
            ))
        })?;
        let version = if reference.version == -1 {
            self.store
                .versions(subject.as_str())
                .await?
                .iter()
                .rev()
                .find(|r| !r.deleted)
                .map(|r| r.version)
                .ok_or_else(|| {
                    RegistryError::InvalidSchema(format!(
                        "reference {}: subject '{subject}' has no live version",
                        reference.name
                    ))
                })?
        } else if (1..=i64::from(i32::MAX)).contains(&reference.version) {
            reference.version
        } else {
            return Err(RegistryError::InvalidSchema(format!(
                "reference {}: version {} is not a version",
                reference.name, reference.version
            )));
        };
        Ok(SchemaReference {
            name: reference.name.clone(),
            subject: subject.to_string(),
            version,
        })
    }

    /// The stored version a pinned reference names; a soft-deleted one still serves (what
    /// references it was registered against it).
    async fn referenced_row(
        &self,
        reference: &SchemaReference,
    ) -> Result<VersionRow, RegistryError> {
        self.store
            .versions(&reference.subject)
            .await?
            .into_iter()
            .find(|r| r.version == reference.version)
            .ok_or_else(|| {
                RegistryError::InvalidSchema(format!(
                    "reference {}: subject '{}' has no version {}",
                    reference.name, reference.subject, reference.version
                ))
            })
    }

    /// Stored versions as whole schemas, their references written out, for compatibility checks.
    async fn history(&self, rows: &[&VersionRow]) -> Result<Vec<(i64, Schema)>, RegistryError> {
        let mut history = Vec::with_capacity(rows.len());
        for row in rows {
            let schema = if row.references.is_empty() {
                Schema::parse_str(&row.schema_text).map_err(|e| unreadable(row, e))?
            } else {
                let (references, referenced) = self.resolve(&row.references).await?;
                ParsedSchema::parse(&row.schema_text, None, references, &referenced)
                    .map_err(|e| unreadable(row, e))?
                    .schema
            };
            history.push((row.version, schema));
        }
        Ok(history)
    }

    /// Refuses to delete `version` of `subject` while a schema in use references it: readers of
    /// that schema need it. Soft deletes look at live users only; permanent ones at any.
    async fn refuse_if_referenced(
        &self,
        subject: &Subject,
        version: i64,
        permanent: bool,
    ) -> Result<(), RegistryError> {
        let users = self
            .store
            .referenced_by(subject.as_str(), version, !permanent)
            .await?;
        if users.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::ReferenceExists(subject.to_string(), version))
        }
    }

    /// Ids of the schemas in use that reference `spec` of `subject`.
    pub async fn referenced_by(
        &self,
        subject: &Subject,
        spec: VersionSpec,
    ) -> Result<Vec<i64>, RegistryError> {
        let found = self.version(subject, spec, true).await?;
        Ok(self
            .store
            .referenced_by(subject.as_str(), found.version, true)
            .await?)
    }

    /// Registers `submission` under `subject` and returns its global id. Registering a schema the
    /// subject already has live returns its existing id and creates no version.
    pub async fn register(
        &self,
        subject: &Subject,
        submission: &SchemaSubmission,
    ) -> Result<i64, RegistryError> {
        let parsed = self.parse(submission).await?;
        match self.effective_mode(subject).await? {
            Mode::ReadOnly => return Err(read_only(subject)),
            Mode::Import => return self.import(subject, &parsed, submission).await,
            Mode::ReadWrite if submission.id.is_some() || submission.version.is_some() => {
                return Err(RegistryError::OperationNotPermitted(format!(
                    "a schema's id and version are given only in IMPORT mode; subject {subject} is in READWRITE mode"
                )));
            }
            Mode::ReadWrite => {}
        }
        let level = self.effective_level(subject).await?;
        for _ in 0..MAX_REGISTER_ATTEMPTS {
            let rows = self.store.versions(subject.as_str()).await?;
            let live: Vec<&VersionRow> = rows.iter().filter(|r| !r.deleted).collect();
            if let Some(existing) = live.iter().find(|r| r.fingerprint == parsed.fingerprint) {
                return Ok(existing.schema_id);
            }
            let messages = compat::check(level, &parsed.schema, &self.history(&live).await?);
            if !messages.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    messages,
                });
            }
            // Soft-deleted versions keep their numbers: the next one follows every row.
            let latest = rows.iter().map(|r| r.version).max().unwrap_or(0);
            let id = self.store.schema_id_for(&parsed).await?;
            if let Some(version) = self
                .store
                .insert_version(subject.as_str(), id, latest)
                .await?
            {
                tracing::info!(%subject, version, id, "schema registered");
                return Ok(id);
            }
        }
        Err(RegistryError::Store(format!(
            "gave up registering under {subject} after {MAX_REGISTER_ATTEMPTS} concurrent conflicts"
        )))
    }

    /// Registers `parsed` with the id (and version) it had in the registry it is imported from.
    /// No compatibility check: the history is copied as it was, checked where it was made.
    async fn import(
        &self,
        subject: &Subject,
        parsed: &ParsedSchema,
        submission: &SchemaSubmission,
    ) -> Result<i64, RegistryError> {
        let id = submission.id.ok_or_else(|| {
            RegistryError::OperationNotPermitted(format!(
                "subject {subject} is in IMPORT mode: give each schema the \"id\" it had"
            ))
        })?;
        if id < 1 {
            return Err(RegistryError::OperationNotPermitted(format!(
                "schema id {id} is not a valid id"
            )));
        }
        let version = match submission.version {
            Some(v) if (1..=i64::from(i32::MAX)).contains(&v) => v,
            Some(v) => return Err(RegistryError::InvalidVersion(v.to_string())),
            None => {
                let rows = self.store.versions(subject.as_str()).await?;
                rows.iter().map(|r| r.version).max().unwrap_or(0) + 1
            }
        };
        if !self.store.import_schema(id, parsed).await? {
            return Err(RegistryError::OperationNotPermitted(format!(
                "Overwrite new schema with id {id} is not permitted."
            )));
        }
        if !self
            .store
            .import_version(subject.as_str(), version, id)
            .await?
        {
            return Err(RegistryError::OperationNotPermitted(format!(
                "subject {subject} already has version {version}, or schema {id} in another version"
            )));
        }
        tracing::info!(%subject, version, id, "schema imported");
        Ok(id)
    }

    /// Finds the version of `subject` holding `submission`.
    pub async fn lookup(
        &self,
        subject: &Subject,
        submission: &SchemaSubmission,
        include_deleted: bool,
    ) -> Result<VersionView, RegistryError> {
        let parsed = self.parse(submission).await?;
        let rows = self.visible_versions(subject, include_deleted).await?;
        rows.iter()
            .rev()
            .find(|r| r.fingerprint == parsed.fingerprint)
            .map(|r| view(subject, r))
            .ok_or(RegistryError::SchemaNotFound)
    }

    pub async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, RegistryError> {
        Ok(self.store.subjects(include_deleted).await?)
    }

    pub async fn versions(
        &self,
        subject: &Subject,
        include_deleted: bool,
    ) -> Result<Vec<i64>, RegistryError> {
        let rows = self.visible_versions(subject, include_deleted).await?;
        Ok(rows.iter().map(|r| r.version).collect())
    }

    pub async fn version(
        &self,
        subject: &Subject,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<VersionView, RegistryError> {
        let rows = self.visible_versions(subject, include_deleted).await?;
        let row = match spec {
            VersionSpec::Latest => rows.last(),
            VersionSpec::Number(n) => rows.iter().find(|r| r.version == n),
        };
        row.map(|r| view(subject, r))
            .ok_or_else(|| RegistryError::VersionNotFound(spec_text(spec)))
    }

    pub async fn schema_by_id(&self, id: i64) -> Result<SchemaView, RegistryError> {
        let schema = self
            .store
            .schema_by_id(id)
            .await?
            .ok_or(RegistryError::SchemaIdNotFound(id))?;
        Ok(SchemaView {
            schema,
            references: self.store.references(id).await?,
        })
    }

    /// `(subject, version)` pairs that use schema `id`.
    pub async fn schema_usages(
        &self,
        id: i64,
        include_deleted: bool,
    ) -> Result<Vec<(String, i64)>, RegistryError> {
        let usages = self.store.usages(id).await?;
        if usages.is_empty() {
            return Err(RegistryError::SchemaIdNotFound(id));
        }
        Ok(usages
            .into_iter()
            .filter(|(_, _, deleted)| include_deleted || !deleted)
            .map(|(subject, version, _)| (subject, version))
            .collect())
    }

    /// Soft-deletes every live version of `subject`, or with `permanent` removes a subject that
    /// was soft-deleted first. Returns the versions affected.
    pub async fn delete_subject(
        &self,
        subject: &Subject,
        permanent: bool,
    ) -> Result<Vec<i64>, RegistryError> {
        if self.effective_mode(subject).await? == Mode::ReadOnly {
            return Err(read_only(subject));
        }
        let rows = self.store.versions(subject.as_str()).await?;
        if rows.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let live: Vec<i64> = rows
            .iter()
            .filter(|r| !r.deleted)
            .map(|r| r.version)
            .collect();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
            }
            for row in &rows {
                self.refuse_if_referenced(subject, row.version, true)
                    .await?;
            }
            self.store.purge(subject.as_str(), None).await?;
            self.store.delete_config(subject.as_str()).await?;
            return Ok(rows.iter().map(|r| r.version).collect());
        }
        if live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_string()));
        }
        for version in &live {
            self.refuse_if_referenced(subject, *version, false).await?;
        }
        self.store.soft_delete(subject.as_str(), None).await?;
        Ok(live)
    }

    /// Soft-deletes one version, or with `permanent` removes one that was soft-deleted first.
    pub async fn delete_version(
        &self,
        subject: &Subject,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i64, RegistryError> {
        if self.effective_mode(subject).await? == Mode::ReadOnly {
            return Err(read_only(subject));
        }
        let rows = self.store.versions(subject.as_str()).await?;
        if rows.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let row = match spec {
            // `latest` means the newest live version for a soft delete, and the newest version of
            // any kind for a permanent one (which must already be soft-deleted).
            VersionSpec::Latest if permanent => rows.last(),
            VersionSpec::Latest => rows.iter().rev().find(|r| !r.deleted),
            VersionSpec::Number(n) => rows.iter().find(|r| r.version == n),
        }
        .ok_or_else(|| RegistryError::VersionNotFound(spec_text(spec)))?;
        match (permanent, row.deleted) {
            (false, true) => Err(RegistryError::VersionSoftDeleted(
                subject.to_string(),
                row.version,
            )),
            (true, false) => Err(RegistryError::VersionNotSoftDeleted(
                subject.to_string(),
                row.version,
            )),
            (false, false) => {
                self.refuse_if_referenced(subject, row.version, false)
                    .await?;
                self.store
                    .soft_delete(subject.as_str(), Some(row.version))
                    .await?;
                Ok(row.version)
            }
            (true, true) => {
                self.refuse_if_referenced(subject, row.version, true)
                    .await?;
                self.store
                    .purge(subject.as_str(), Some(row.version))
                    .await?;
                Ok(row.version)
            }
        }
    }

    /// Tests `submission` against one version (`Some`) or against what registration would check
    /// (`None`). Returns the violations; empty means compatible.
    pub async fn check_compatibility(
        &self,
        subject: &Subject,
        spec: Option<VersionSpec>,
        submission: &SchemaSubmission,
    ) -> Result<Vec<String>, RegistryError> {
        let parsed = self.parse(submission).await?;
        let level = self.effective_level(subject).await?;
        let rows = self.store.versions(subject.as_str()).await?;
        let live: Vec<&VersionRow> = rows.iter().filter(|r| !r.deleted).collect();
        let Some(spec) = spec else {
            return Ok(compat::check(
                level,
                &parsed.schema,
                &self.history(&live).await?,
            ));
        };
        if live.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let row = match spec {
            VersionSpec::Latest => live.last().copied(),
            VersionSpec::Number(n) => live.iter().find(|r| r.version == n).copied(),
        }
        .ok_or_else(|| RegistryError::VersionNotFound(spec_text(spec)))?;
        // Against a single named version the direction of the level applies, not its reach.
        let single = match level {
            CompatibilityLevel::BackwardTransitive => CompatibilityLevel::Backward,
            CompatibilityLevel::ForwardTransitive => CompatibilityLevel::Forward,
            CompatibilityLevel::FullTransitive => CompatibilityLevel::Full,
            other => other,
        };
        Ok(compat::check(
            single,
            &parsed.schema,
            &self.history(&[row]).await?,
        ))
    }

    pub async fn global_level(&self) -> Result<CompatibilityLevel, RegistryError> {
        match self.store.config(GLOBAL).await? {
            Some(level) => level.parse(),
            None => Ok(self.default_level),
        }
    }

    pub async fn subject_level(
        &self,
        subject: &Subject,
    ) -> Result<Option<CompatibilityLevel>, RegistryError> {
        self.store
            .config(subject.as_str())
            .await?
            .map(|level| level.parse())
            .transpose()
    }

    /// Sets the level of `subject`, or the global one with `None`.
    pub async fn set_level(
        &self,
        subject: Option<&Subject>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        let key = subject.map_or(GLOBAL, Subject::as_str);
        Ok(self.store.set_config(key, level.as_str()).await?)
    }

    /// Removes the level of `subject`; returns the one it had.
    pub async fn delete_subject_level(
        &self,
        subject: &Subject,
    ) -> Result<CompatibilityLevel, RegistryError> {
        let previous = self
            .subject_level(subject)
            .await?
            .ok_or_else(|| RegistryError::subject_not_found(subject))?;
        self.store.delete_config(subject.as_str()).await?;
        Ok(previous)
    }

    /// The registry's mode: READWRITE unless set.
    pub async fn global_mode(&self) -> Result<Mode, RegistryError> {
        match self.store.mode(GLOBAL).await? {
            Some(mode) => mode.parse(),
            None => Ok(Mode::ReadWrite),
        }
    }

    pub async fn subject_mode(&self, subject: &Subject) -> Result<Option<Mode>, RegistryError> {
        self.store
            .mode(subject.as_str())
            .await?
            .map(|mode| mode.parse())
            .transpose()
    }

    /// Sets the mode of `subject`, or the registry's with `None`. IMPORT only where there is
    /// nothing yet (an id imported over a registered one would change what readers resolved),
    /// unless `force`.
    pub async fn set_mode(
        &self,
        subject: Option<&Subject>,
        mode: Mode,
        force: bool,
    ) -> Result<(), RegistryError> {
        if mode == Mode::Import && !force {
            let occupied = match subject {
                Some(subject) => !self.store.versions(subject.as_str()).await?.is_empty(),
                None => !self.store.subjects(true).await?.is_empty(),
            };
            if occupied {
                return Err(RegistryError::OperationNotPermitted(
                    "Cannot import since found existing subjects".to_owned(),
                ));
            }
        }
        let key = subject.map_or(GLOBAL, Subject::as_str);
        Ok(self.store.set_mode(key, mode.as_str()).await?)
    }

    /// Removes the mode of `subject`; returns the one it had.
    pub async fn delete_subject_mode(&self, subject: &Subject) -> Result<Mode, RegistryError> {
        let previous = self
            .subject_mode(subject)
            .await?
            .ok_or_else(|| RegistryError::SubjectModeNotFound(subject.to_string()))?;
        self.store.delete_mode(subject.as_str()).await?;
        Ok(previous)
    }

    async fn effective_mode(&self, subject: &Subject) -> Result<Mode, RegistryError> {
        match self.subject_mode(subject).await? {
            Some(mode) => Ok(mode),
            None => self.global_mode().await,
        }
    }

    async fn effective_level(
        &self,
        subject: &Subject,
    ) -> Result<CompatibilityLevel, RegistryError> {
        match self.subject_level(subject).await? {
            Some(level) => Ok(level),
            None => self.global_level().await,
        }
    }

    /// The versions a reader may see; a subject with none is "not found", as in Confluent.
    async fn visible_versions(
        &self,
        subject: &Subject,
        include_deleted: bool,
    ) -> Result<Vec<VersionRow>, RegistryError> {
        let rows: Vec<VersionRow> = self
            .store
            .versions(subject.as_str())
            .await?
            .into_iter()
            .filter(|r| include_deleted || !r.deleted)
            .collect();
        if rows.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(rows)
    }
}

fn read_only(subject: &Subject) -> RegistryError {
    RegistryError::OperationNotPermitted(format!("Subject {subject} is in read-only mode"))
}

fn view(subject: &Subject, row: &VersionRow) -> VersionView {
    VersionView {
        subject: subject.to_string(),
        version: row.version,
        id: row.schema_id,
        schema: row.schema_text.clone(),
        references: row.references.clone(),
    }
}

fn spec_text(spec: VersionSpec) -> String {
    match spec {
        VersionSpec::Latest => "latest".to_owned(),
        VersionSpec::Number(n) => n.to_string(),
    }
}

/// Stored schemas were canonicalised by apache-avro on the way in, so they parse; a failure
/// here means the database was edited by hand, which is a store problem, not the client's.
fn unreadable(row: &VersionRow, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store(format!(
        "stored schema {} is unreadable: {e}",
        row.schema_id
    ))
}
