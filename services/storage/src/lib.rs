//! One way for every hixbus component to reach its database.
//!
//! Components write one SQL dialect that PostgreSQL and SQLite both accept (sqlx's `Any` driver,
//! `$N` parameters, `ON CONFLICT`, no vendor functions), so the embedded demo on SQLite runs the
//! same queries production runs on PostgreSQL.

mod audit;
pub mod group;
mod links;

pub use audit::{AuditEntry, AuditLog, Shippable};
pub use links::{Linked, Links};

/// This crate's migrations: the audit log and patient links (versions 1000–1999).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool and the engine behind it.
#[derive(Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// As given to `connect`: dedicated connections (PostgreSQL's LISTEN) need it. It may hold a
    /// password, so it is never printed.
    url: std::sync::Arc<str>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects to `postgres://…` or `sqlite://…` (the file is created if missing) or
    /// `sqlite::memory:`.
    pub async fn connect(database_url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if database_url.starts_with("postgres") {
            (Backend::Postgres, database_url.to_owned())
        } else if database_url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(database_url))
        } else {
            return Err(sqlx::Error::Configuration(
                format!("unsupported database URL {database_url:?}: use postgres:// or sqlite://")
                    .into(),
            ));
        };
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // sqlx pings every connection it hands out (`test_before_acquire`): a second round trip
        // for every statement, most of a busy service's traffic with its database. A connection
        // in steady use has just proven itself; one idle for a while (across a database restart,
        // say) is pinged first, and replaced if the ping fails.
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        options = match (backend, in_memory) {
            // Every connection to `sqlite::memory:` is a separate, empty database: keep exactly
            // one, forever.
            (Backend::Sqlite, true) => options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            (Backend::Sqlite, false) => options.max_connections(4),
            (Backend::Postgres, _) => options.max_connections(10),
        };
        let pool = options.connect(&url).await?;
        if backend == Backend::Sqlite && !in_memory {
            // Readers no longer wait for a writer's commit (nor it for them): one
            // organization's long read cannot hold up another's writes. Persistent per file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Self {
            pool,
            backend,
            url: database_url.into(),
        })
    }

    /// The URL this database was connected with (it may hold a password: do not log it; see
    /// [`redact`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Applies a crate's versioned migrations (`sqlx::migrate!`) that this database lacks.
    ///
    /// Several crates keep tables in one service database (the audit log beside a read model),
    /// so they share sqlx's `_sqlx_migrations` table: each crate numbers its migrations in its
    /// own range (docs/architecture.md), and a migrator ignores the versions of the others. On
    /// PostgreSQL sqlx holds an advisory lock while migrating, so replicas starting together
    /// take turns.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), sqlx::Error> {
        let own = Migrator {
            migrations: migrator.migrations.clone(),
            ignore_missing: true,
            ..Migrator::DEFAULT
        };
        own.run(&self.pool).await?;
        Ok(())
    }
}

/// How long a pooled connection may sit idle and still be handed out without a ping.
const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// The most rows one multi-row statement writes: at up to a dozen parameters a row that stays
/// far below SQLite's 32,766 and PostgreSQL's 65,535.
pub const ROWS_PER_STATEMENT: usize = 500;

/// `$first, $first+1, …` for `n` values: the parameters of an `IN (…)` list, which both
/// engines accept where neither takes an array parameter the other understands.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, …, $columns), ($columns+1, …), …` for `rows` rows: the `VALUES` of a multi-row
/// `INSERT`, which writes a page or a run of events in one round trip instead of one per row.
pub fn value_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", placeholders(1, columns));
    repeat_row(rows, columns, &row)
}

/// `row` (whose parameters are `$1` to `$params`, constants and repeats allowed) `rows` times,
/// comma-separated, each copy's parameters numbered after the previous copy's: the `VALUES` of
/// a multi-row `INSERT` whose rows hold more than plain parameters.
pub fn repeat_row(rows: usize, params: usize, row: &str) -> String {
    let mut out = String::with_capacity(rows * (row.len() + 8));
    for n in 0..rows {
        if n > 0 {
            out.push_str(", ");
        }
        let mut rest = row;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..=at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len() - at - 1, |end| end);
            // A `$` not followed by a number is not a parameter: left as it is.
            if let Ok(param) = rest[at + 1..at + 1 + digits].parse::<usize>() {
                out.push_str(&(n * params + param).to_string());
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_str(rest);
    }
    out
}

/// The steps of SQLite's plan for `sql` (`EXPLAIN QUERY PLAN`): what a test checks to know a
/// statement on a hot path uses its index instead of scanning a table that only grows.
pub async fn sqlite_plan(db: &Database, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::Row as _;
    sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>(3))
        .collect()
}

/// Database URLs may carry passwords; logs and messages must not.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// SQLite refuses to create a missing file unless asked to.
fn sqlite_url(url: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, repeat_row, sqlite_url, value_rows};

    #[test]
    fn each_row_of_a_multi_row_insert_gets_its_own_parameters() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(
            repeat_row(3, 2, "($1, $2, $2, 'issued')"),
            "($1, $2, $2, 'issued'), ($3, $4, $4, 'issued'), ($5, $6, $6, 'issued')"
        );
        assert_eq!(repeat_row(2, 1, "($1, '$x')"), "($1, '$x'), ($2, '$x')");
        assert_eq!(value_rows(0, 3), "");
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redact("postgres://u:secret@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact("sqlite://r.db"), "sqlite://r.db");
    }

    #[test]
    fn sqlite_files_are_created_on_demand() {
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?x=1"),
            "sqlite://a.db?x=1&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite::memory:"), "sqlite::memory:");
    }
}
