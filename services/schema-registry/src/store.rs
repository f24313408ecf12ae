//! Storage for schemas, subject versions, compatibility settings and modes.
//!
//! One SQL dialect serves PostgreSQL and SQLite (sqlx's `Any` driver, `$N` parameters, no
//! vendor functions). Ids and versions are allocated as `MAX + 1` under unique constraints:
//! two registry replicas racing on one database both try the same number, one insert fails with
//! a unique violation, and the loser retries with the next number. No id is ever handed out twice.

use hixbus_storage::Database;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::domain::{ParsedSchema, SchemaReference};

/// The registry's tables (versions 3000–3999).
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Key of the global compatibility setting in `registry_config` (subjects are never empty).
pub const GLOBAL: &str = "";

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    db: Database,
}

/// One version of a subject, with its schema.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i64,
    pub schema_id: i64,
    pub deleted: bool,
    pub fingerprint: String,
    pub schema_text: String,
    pub references: Vec<SchemaReference>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (the file is created if missing).
    pub async fn connect(database_url: &str) -> Result<Self, sqlx::Error> {
        let db = Database::connect(database_url).await?;
        Ok(Self {
            pool: db.pool.clone(),
            db,
        })
    }

    /// Creates the tables if they are missing. Safe to run from several replicas at once.
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        self.db.migrate(&MIGRATIONS).await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    pub async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, sqlx::Error> {
        let sql = if include_deleted {
            "SELECT DISTINCT subject FROM registry_versions ORDER BY subject"
        } else {
            "SELECT DISTINCT subject FROM registry_versions WHERE deleted = 0 ORDER BY subject"
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
    }

    /// Every version of `subject`, soft-deleted ones included, oldest first.
    pub async fn versions(&self, subject: &str) -> Result<Vec<VersionRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT v.version, v.schema_id, v.deleted, s.fingerprint, s.schema_text
             FROM registry_versions v JOIN registry_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        let mut versions: Vec<VersionRow> =
            rows.iter().map(version_row).collect::<Result<_, _>>()?;
        let references = sqlx::query(
            "SELECT r.schema_id, r.name, r.subject, r.version FROM registry_references r
             WHERE r.schema_id IN (SELECT schema_id FROM registry_versions WHERE subject = $1)
             ORDER BY r.schema_id, r.position",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        for row in &references {
            let schema_id: i64 = row.try_get(0)?;
            let reference = reference_row(row, 1)?;
            for version in versions.iter_mut().filter(|v| v.schema_id == schema_id) {
                version.references.push(reference.clone());
            }
        }
        Ok(versions)
    }

    /// The references of schema `id`, in the order they were given.
    pub async fn references(&self, id: i64) -> Result<Vec<SchemaReference>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, subject, version FROM registry_references WHERE schema_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| reference_row(r, 0)).collect()
    }

    /// Ids of the schemas that reference `version` of `subject` and are still in use: by a live
    /// version with `live_only`, else by any version (a soft-deleted one can still be read by id,
    /// and reading it needs what it references).
    pub async fn referenced_by(
        &self,
        subject: &str,
        version: i64,
        live_only: bool,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let sql = if live_only {
            "SELECT DISTINCT r.schema_id FROM registry_references r
             WHERE r.subject = $1 AND r.version = $2 AND EXISTS
                (SELECT 1 FROM registry_versions v WHERE v.schema_id = r.schema_id AND v.deleted = 0)
             ORDER BY r.schema_id"
        } else {
            "SELECT DISTINCT r.schema_id FROM registry_references r
             WHERE r.subject = $1 AND r.version = $2 AND EXISTS
                (SELECT 1 FROM registry_versions v WHERE v.schema_id = r.schema_id)
             ORDER BY r.schema_id"
        };
        let rows = sqlx::query(sql)
            .bind(subject)
            .bind(version)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// The global id of `schema`, allocating one if it was never registered under any subject.
    pub async fn schema_id_for(&self, schema: &ParsedSchema) -> Result<i64, sqlx::Error> {
        loop {
            let existing = sqlx::query("SELECT id FROM registry_schemas WHERE fingerprint = $1")
                .bind(&schema.fingerprint)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = existing {
                return row.try_get(0);
            }
            match self.insert_schema(None, schema).await {
                Ok(id) => return Ok(id),
                // Another replica took this id, or registered the same schema: look again.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores `schema` and its references in one transaction (a schema row without its
    /// references would resolve to something else), under `id` or the next free one.
    async fn insert_schema(
        &self,
        id: Option<i64>,
        schema: &ParsedSchema,
    ) -> Result<i64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let row = match id {
            Some(id) => sqlx::query(
                "INSERT INTO registry_schemas (id, fingerprint, schema_type, schema_text)
                 VALUES ($1, $2, 'AVRO', $3) RETURNING id",
            )
            .bind(id),
            None => sqlx::query(
                "INSERT INTO registry_schemas (id, fingerprint, schema_type, schema_text)
                 SELECT COALESCE(MAX(id), 0) + 1, $1, 'AVRO', $2 FROM registry_schemas
                 RETURNING id",
            ),
        }
        .bind(&schema.fingerprint)
        .bind(&schema.canonical)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get(0)?;
        for (position, reference) in schema.references.iter().enumerate() {
            sqlx::query(
                "INSERT INTO registry_references (schema_id, position, name, subject, version)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&reference.name)
            .bind(&reference.subject)
            .bind(reference.version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Adds version `latest + 1` of `subject`, where `latest` is the newest version the caller
    /// checked compatibility against. `None` when the subject moved on meanwhile (a concurrent
    /// registration won the race): the caller re-reads the subject and checks again, so no
    /// version is ever registered without being checked against the one before it.
    pub async fn insert_version(
        &self,
        subject: &str,
        schema_id: i64,
        latest: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO registry_versions (subject, version, schema_id, deleted)
             SELECT $1, $3 + 1, $2, 0
             WHERE (SELECT COALESCE(MAX(version), 0) FROM registry_versions WHERE subject = $1) = $3
             RETURNING version",
        )
        .bind(subject)
        .bind(schema_id)
        .bind(latest)
        .fetch_optional(&self.pool)
        .await;
        match inserted {
            Ok(row) => row.map(|r| r.try_get(0)).transpose(),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The schema text for `id`, if any subject version (soft-deleted or not) still uses it.
    pub async fn schema_by_id(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT s.schema_text FROM registry_schemas s
             WHERE s.id = $1 AND EXISTS (SELECT 1 FROM registry_versions v WHERE v.schema_id = s.id)",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// `(subject, version, deleted)` for every version using schema `id`.
    pub async fn usages(&self, id: i64) -> Result<Vec<(String, i64, bool)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT subject, version, deleted FROM registry_versions
             WHERE schema_id = $1 ORDER BY subject, version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<i64, _>(2)? != 0)))
            .collect()
    }

    /// Soft-deletes one live version, or every live version of the subject with `None`.
    pub async fn soft_delete(
        &self,
        subject: &str,
        version: Option<i64>,
    ) -> Result<u64, sqlx::Error> {
        let query = match version {
            Some(v) => sqlx::query(
                "UPDATE registry_versions SET deleted = 1 WHERE subject = $1 AND version = $2 AND deleted = 0",
            )
            .bind(subject)
            .bind(v),
            None => sqlx::query("UPDATE registry_versions SET deleted = 1 WHERE subject = $1 AND deleted = 0")
                .bind(subject),
        };
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Permanently removes soft-deleted versions: one, or all of the subject's with `None`.
    pub async fn purge(&self, subject: &str, version: Option<i64>) -> Result<u64, sqlx::Error> {
        let query = match version {
            Some(v) => sqlx::query(
                "DELETE FROM registry_versions WHERE subject = $1 AND version = $2 AND deleted = 1",
            )
            .bind(subject)
            .bind(v),
            None => sqlx::query("DELETE FROM registry_versions WHERE subject = $1 AND deleted = 1")
                .bind(subject),
        };
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    pub async fn mode(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        self.setting("SELECT mode FROM registry_mode WHERE subject = $1", key)
            .await
    }

    pub async fn set_mode(&self, key: &str, mode: &str) -> Result<(), sqlx::Error> {
        self.set_setting(
            "INSERT INTO registry_mode (subject, mode) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET mode = excluded.mode",
            key,
            mode,
        )
        .await
    }

    pub async fn delete_mode(&self, key: &str) -> Result<(), sqlx::Error> {
        self.set_setting("DELETE FROM registry_mode WHERE subject = $1", key, "")
            .await
    }

    /// Stores `schema` under the id it had in another registry (IMPORT mode). `Ok(false)` when
    /// the id or the schema is already taken by something else: an import must not rewrite
    /// what readers already resolved.
    pub async fn import_schema(&self, id: i64, schema: &ParsedSchema) -> Result<bool, sqlx::Error> {
        let existing = sqlx::query("SELECT fingerprint FROM registry_schemas WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = existing {
            return Ok(row.try_get::<String, _>(0)? == schema.fingerprint);
        }
        match self.insert_schema(Some(id), schema).await {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `version` of `subject` as it was in another registry (IMPORT mode). `Ok(false)` when
    /// the subject already has that version with another schema, or that schema live elsewhere.
    pub async fn import_version(
        &self,
        subject: &str,
        version: i64,
        schema_id: i64,
    ) -> Result<bool, sqlx::Error> {
        let existing = sqlx::query(
            "SELECT schema_id FROM registry_versions WHERE subject = $1 AND version = $2",
        )
        .bind(subject)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = existing {
            return Ok(row.try_get::<i64, _>(0)? == schema_id);
        }
        let inserted = sqlx::query(
            "INSERT INTO registry_versions (subject, version, schema_id, deleted) VALUES ($1, $2, $3, 0)",
        )
        .bind(subject)
        .bind(version)
        .bind(schema_id)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn config(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        self.setting(
            "SELECT compatibility FROM registry_config WHERE subject = $1",
            key,
        )
        .await
    }

    pub async fn set_config(&self, key: &str, level: &str) -> Result<(), sqlx::Error> {
        self.set_setting(
            "INSERT INTO registry_config (subject, compatibility) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
            key,
            level,
        )
        .await
    }

    pub async fn delete_config(&self, key: &str) -> Result<(), sqlx::Error> {
        self.set_setting("DELETE FROM registry_config WHERE subject = $1", key, "")
            .await
    }

    /// A per-subject setting (compatibility, mode): `sql` selects it by subject, `$1`.
    async fn setting(&self, sql: &'static str, key: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// Changes a per-subject setting: `sql` takes the subject as `$1` and, unless it deletes,
    /// the value as `$2` (bound only when named: PostgreSQL refuses a parameter it is not asked
    /// for).
    async fn set_setting(
        &self,
        sql: &'static str,
        key: &str,
        value: &str,
    ) -> Result<(), sqlx::Error> {
        let mut query = sqlx::query(sql).bind(key);
        if sql.contains("$2") {
            query = query.bind(value);
        }
        query.execute(&self.pool).await.map(drop)
    }
}

fn version_row(row: &AnyRow) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        version: row.try_get(0)?,
        schema_id: row.try_get(1)?,
        deleted: row.try_get::<i64, _>(2)? != 0,
        fingerprint: row.try_get(3)?,
        schema_text: row.try_get(4)?,
        references: Vec::new(),
    })
}

/// A reference read from columns `from..from + 3`: name, subject, version.
fn reference_row(row: &AnyRow, from: usize) -> Result<SchemaReference, sqlx::Error> {
    Ok(SchemaReference {
        name: row.try_get(from)?,
        subject: row.try_get(from + 1)?,
        version: row.try_get(from + 2)?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
