//! A PostgreSQL server of a test's own, for the fault suite: crashing the shared server would
//! break every other test running beside it.
//!
//! Built from the PostgreSQL binaries on the machine (Debian's `/usr/lib/postgresql/N/bin`, or
//! `HIXBUS_PG_BIN`). PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user (through `runuser`), as Debian's own scripts do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway PostgreSQL cluster on a free port, trust authentication, fsync off.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        crate::init_tracing();
        let bin = pg_bin();
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("hixbus-pg-")
            .tempdir()
            .expect("temporary directory");
        if as_postgres {
            run(Command::new("chown").args(["postgres:", &path(dir.path())]));
        }
        let port = crate::free_port();
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        pg.ctl(&[
            "initdb",
            "-o",
            "-A trust -U postgres -E UTF8 --no-sync --locale=C",
        ]);
        pg.start_server();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A new empty database on this server.
    pub async fn fresh_database(&self) -> String {
        let name = format!("hixbus_fault_{}", uuid::Uuid::new_v4().simple());
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.admin_url())
            .await
            .expect("private PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A crash: `pg_ctl stop -m immediate` (no checkpoint, connections cut), then a start,
    /// which recovers from the write-ahead log.
    pub fn crash_and_restart(&self) {
        self.ctl(&["stop", "-m", "immediate"]);
        self.start_server();
    }

    fn data(&self) -> String {
        path(&self.dir.path().join("data"))
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path(self.dir.path())
        );
        let log = path(&self.dir.path().join("server.log"));
        self.ctl(&["start", "-w", "-o", &options, "-l", &log]);
    }

    fn ctl(&self, args: &[&str]) {
        let pg_ctl = path(&self.bin.join("pg_ctl"));
        let data = self.data();
        let mut all = vec![pg_ctl.as_str(), "-D", data.as_str()];
        all.extend(args);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(&all);
            c
        } else {
            let mut c = Command::new(all[0]);
            c.args(&all[1..]);
            c
        };
        run(command.current_dir(self.dir.path()));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = path(&self.bin.join("pg_ctl"));
        let data = self.data();
        let args = [pg_ctl.as_str(), "-D", &data, "stop", "-m", "immediate"];
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        } else {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        };
        let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest PostgreSQL server binaries on the machine.
fn pg_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("HIXBUS_PG_BIN") {
        return bin.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries (/usr/lib/postgresql/N/bin); set HIXBUS_PG_BIN")
    })
}
