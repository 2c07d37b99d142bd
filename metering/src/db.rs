//! The database: one code path for SQLite and PostgreSQL through sqlx's
//! `Any` driver.
//!
//! The SQL is the common subset of both dialects: `$n` placeholders (SQLite
//! reads `$1` as parameter 1), BIGINT coins and unix-millisecond times, TEXT
//! ids, `ON CONFLICT … DO NOTHING`, `RETURNING`, `CASE` instead of
//! `MIN`/`LEAST`, and every aggregate cast to BIGINT (PostgreSQL's SUM of
//! BIGINT is NUMERIC, which `Any` cannot decode). Only the DDL differs (an
//! identity column), so there are two migration folders with one schema.
//!
//! SQLite: one writer connection (so in-process writers queue in the pool,
//! not on SQLite's busy lock) and a few readers, WAL, `synchronous=FULL`,
//! foreign keys on, a busy timeout for other processes on the same file,
//! and `BEGIN IMMEDIATE` for writes. PostgreSQL: one pool for both.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use crate::clock::Clock;
use crate::error::MeterError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Backend, MeterError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(MeterError::Config(format!(
                "database url `{}` is neither sqlite:… nor postgres://…",
                redact(url)
            )))
        }
    }
}

/// The URL of an SQLite database file (created when missing).
pub fn sqlite_url(path: &Path) -> String {
    let mut out = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out.push_str("?mode=rwc");
    out
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Clone)]
pub(crate) struct Db {
    pub backend: Backend,
    pub write: AnyPool,
    pub read: AnyPool,
}

impl Db {
    pub async fn open(url: &str, max_connections: u32, clock: Clock) -> Result<Db, MeterError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let _io = clock.io_guard();
        let db = match backend {
            Backend::Sqlite => {
                if let Some(dir) = sqlite_file(url).as_deref().and_then(Path::parent)
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        MeterError::Config(format!("creating {}: {e}", dir.display()))
                    })?;
                }
                let url = if url.contains("mode=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let options = || {
                    AnyPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(60))
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute(
                                    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                                     PRAGMA synchronous = FULL;",
                                )
                                .await?;
                                Ok(())
                            })
                        })
                };
                let write = options().max_connections(1).connect(&url).await?;
                // WAL is a property of the file: set once, by the writer.
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                    .fetch_one(&write)
                    .await?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(MeterError::Config(format!(
                        "SQLite refused WAL journal mode (got {mode})"
                    )));
                }
                migrate_sqlite(&write).await?;
                let read = options()
                    .max_connections(max_connections.max(1))
                    .connect(&url)
                    .await?;
                Db {
                    backend,
                    write,
                    read,
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(60))
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect(url)
                    .await?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                Db {
                    backend,
                    write: pool.clone(),
                    read: pool,
                }
            }
        };
        Ok(db)
    }

    /// A write transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, MeterError> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.write.close().await;
        if self.backend == Backend::Sqlite {
            self.read.close().await;
        }
    }
}

/// Runs the SQLite migrations with foreign keys off, then checks them: SQLite
/// changes a CHECK constraint only by rebuilding the table, and a table that
/// others reference can be rebuilt only with foreign keys off (SQLite's
/// "generalized ALTER TABLE" procedure). The pragma is a no-op inside a
/// transaction, so it is set on the connection before the migrator's
/// transactions and restored after.
async fn migrate_sqlite(write: &AnyPool) -> Result<(), MeterError> {
    let mut conn = write.acquire().await?;
    conn.execute("PRAGMA foreign_keys = OFF").await?;
    let migrated = SQLITE_MIGRATIONS.run(&mut *conn).await;
    let dangling = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    migrated?;
    let dangling = dangling?;
    if !dangling.is_empty() {
        return Err(MeterError::Internal(format!(
            "{} rows break a foreign key after the migrations",
            dangling.len()
        )));
    }
    Ok(())
}

fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let decoded = path
        .replace("%20", " ")
        .replace("%23", "#")
        .replace("%3F", "?")
        .replace("%25", "%");
    Some(std::path::PathBuf::from(decoded))
}

/// Reads a column, naming it in the error.
pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, MeterError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get::<T, _>(col).map_err(MeterError::from)
}

/// True for a unique-constraint violation (a concurrent writer won).
pub(crate) fn is_unique_violation(e: &MeterError) -> bool {
    match e {
        MeterError::Database(sqlx::Error::Database(d)) => {
            d.is_unique_violation() || d.code().is_some_and(|c| c == "23505" || c == "2067")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration's lines after its two header lines, each block between
    /// `-- dialect: begin` and `-- dialect: end` (DDL only one dialect has,
    /// such as changing a CHECK) replaced by one placeholder line.
    fn common_lines(sql: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut in_block = false;
        for line in sql.lines().skip(2) {
            match line {
                "-- dialect: begin" => {
                    assert!(!in_block, "nested dialect block");
                    in_block = true;
                    out.push(line);
                }
                "-- dialect: end" => {
                    assert!(in_block, "dialect end without begin");
                    in_block = false;
                }
                _ if in_block => {}
                _ => out.push(line),
            }
        }
        assert!(!in_block, "unterminated dialect block");
        out
    }

    #[test]
    fn the_two_schemas_differ_only_in_identity_columns_and_dialect_blocks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut sqlite: Vec<_> = std::fs::read_dir(dir.join("sqlite"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let mut pg: Vec<_> = std::fs::read_dir(dir.join("postgres"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        sqlite.sort();
        pg.sort();
        assert_eq!(sqlite, pg, "the same migrations in both folders");
        for name in sqlite {
            let a = std::fs::read_to_string(dir.join("sqlite").join(&name)).unwrap();
            let b = std::fs::read_to_string(dir.join("postgres").join(&name)).unwrap();
            let a = common_lines(&a);
            let b = common_lines(&b);
            assert_eq!(a.len(), b.len(), "{name:?}");
            for (x, y) in a.iter().zip(&b) {
                if x != y {
                    assert!(
                        x.contains("INTEGER PRIMARY KEY")
                            && y.contains("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
                        "{name:?}: `{x}` vs `{y}`"
                    );
                }
            }
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            sqlite_url(Path::new("/var/lib/callgate/metering.db")),
            "sqlite:///var/lib/callgate/metering.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url(Path::new("data dir/m#1.db")),
            "sqlite://data%20dir/m%231.db?mode=rwc"
        );
        assert_eq!(
            sqlite_file("sqlite://data/metering.db?mode=rwc").unwrap(),
            Path::new("data/metering.db")
        );
        assert_eq!(
            redact("postgres://cg:hunter2@db:5432/cg"),
            "postgres://cg:***@db:5432/cg"
        );
        assert_eq!(
            Backend::of_url("postgresql://x").unwrap(),
            Backend::Postgres
        );
        assert_eq!(Backend::of_url("sqlite:x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("mysql://x").unwrap_err().code(), "config");
    }
}
