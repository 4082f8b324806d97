//! Each service's own database, opened the same way everywhere.
//!
//! Embedded default: one SQLite file per service under `data_dir` (`auth.db`, `orders.db`, ...).
//! Production: one Postgres database holding one schema per service (`<prefix><service>`), so a
//! service's tables are its own and the same migrations run on both backends.

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm_migration::MigratorTrait;

use crate::config::{Config, DatabaseTarget, redact_url};

/// Why a service's database could not be opened; one line that names the database.
#[derive(Debug, thiserror::Error)]
pub enum DbOpenError {
    /// The configuration itself is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory cannot be created.
    #[error("cannot create data directory {dir} (data_dir): {source}")]
    DataDir {
        /// The directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database did not answer or refused us.
    #[error("cannot connect to database {target} for the {service} service: {reason}")]
    Connect {
        /// The service whose database it is.
        service: &'static str,
        /// The database, password redacted.
        target: String,
        /// What the driver said.
        reason: String,
    },
    /// A migration failed.
    #[error("cannot migrate the {service} database {target}: {reason}")]
    Migrate {
        /// The service whose database it is.
        service: &'static str,
        /// The database, password redacted.
        target: String,
        /// What the migration said.
        reason: String,
    },
}

/// How long to wait for a database connection before giving up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `service`'s database and applies its migrations (`M`), idempotently.
pub async fn open_and_migrate<M: MigratorTrait>(
    config: &Config,
    service: &'static str,
) -> Result<DatabaseConnection, DbOpenError> {
    let (db, target) = open(config, service).await?;
    let failed = |e: sea_orm::DbErr| DbOpenError::Migrate {
        service,
        target: target.clone(),
        reason: one_line(&e.to_string()),
    };
    match db.get_database_backend() {
        DbBackend::Postgres => {
            // Replicas starting together would race the same DDL; a transaction-scoped
            // advisory lock per schema lets one migrate while the others wait, then find
            // nothing left to do. Postgres DDL is transactional, so a failed migration leaves
            // no half-made schema.
            let txn = begin_write(&db).await.map_err(failed)?;
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                [format!("sneakernet-migrate:{target}").into()],
            ))
            .await
            .map_err(failed)?;
            M::up(&txn, None).await.map_err(failed)?;
            txn.commit().await.map_err(failed)?;
        }
        _ => M::up(&db, None).await.map_err(failed)?,
    }
    Ok(db)
}

/// Opens `service`'s database (creating the SQLite file or Postgres schema if missing).
/// Returns the connection and a printable name of the database.
pub async fn open(
    config: &Config,
    service: &'static str,
) -> Result<(DatabaseConnection, String), DbOpenError> {
    match config.database_target()? {
        DatabaseTarget::Sqlite { dir } => {
            open_sqlite(&dir, service, config.database_max_connections).await
        }
        DatabaseTarget::Postgres { url, schema_prefix } => {
            let schema = format!("{schema_prefix}{service}");
            open_postgres(&url, &schema, service, config.database_max_connections).await
        }
    }
}

async fn open_sqlite(
    dir: &Path,
    service: &'static str,
    max_connections: u32,
) -> Result<(DatabaseConnection, String), DbOpenError> {
    std::fs::create_dir_all(dir).map_err(|source| DbOpenError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let file = dir.join(format!("{service}.db"));
    let target = file.display().to_string();
    let mut options = ConnectOptions::new("sqlite::memory:");
    let filename = file.clone();
    options
        .max_connections(max_connections)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |_| {
            SqliteConnectOptions::new()
                .filename(&filename)
                .create_if_missing(true)
                // WAL lets readers proceed during a write. FULL, not NORMAL: a commit is
                // answered (a kiosk's message receipted, which lets the kiosk forget it; a
                // payment booked) only once it survives a power loss too. NORMAL in WAL mode
                // may drop the last commits on power loss, and a receipted message is then
                // lost for good.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    let db = Database::connect(options)
        .await
        .map_err(|e| DbOpenError::Connect {
            service,
            target: target.clone(),
            reason: one_line(&e.to_string()),
        })?;
    Ok((db, target))
}

async fn open_postgres(
    url: &str,
    schema: &str,
    service: &'static str,
    max_connections: u32,
) -> Result<(DatabaseConnection, String), DbOpenError> {
    let target = format!("{} (schema {schema})", redact_url(url));
    let connect_error = |e: sea_orm::DbErr| DbOpenError::Connect {
        service,
        target: target.clone(),
        reason: one_line(&e.to_string()),
    };

    // sqlx reports an unreachable server as a pool timeout; probing the socket first gives
    // the operator the real reason ("connection refused", "no route to host").
    if let Err(reason) = probe_tcp(url).await {
        return Err(DbOpenError::Connect {
            service,
            target,
            reason,
        });
    }

    // The schema must exist before a pool whose search_path names it is useful.
    let mut bootstrap = ConnectOptions::new(url);
    bootstrap
        .max_connections(1)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false);
    let admin = Database::connect(bootstrap).await.map_err(connect_error)?;
    let created = admin
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        ))
        .await;
    if let Err(error) = created {
        // Two replicas creating the schema at once: one of them gets a unique violation from
        // the catalog even with IF NOT EXISTS. Fine, if the schema is there now.
        let exists = admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT 1 AS present FROM pg_namespace WHERE nspname = $1",
                [schema.into()],
            ))
            .await
            .map_err(connect_error)?
            .is_some();
        if !exists {
            return Err(connect_error(error));
        }
    }
    admin.close().await.map_err(connect_error)?;

    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false)
        .set_schema_search_path(schema);
    let db = Database::connect(options).await.map_err(connect_error)?;
    Ok((db, target))
}

/// Opens (and drops) a TCP connection to the URL's host and port. URLs without a host (Unix
/// sockets given as a query parameter) pass unprobed.
async fn probe_tcp(url: &str) -> Result<(), String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let port = parsed.port().unwrap_or(5432);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!(
            "{host}:{port}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a database failure means for the caller: the one place that reads driver errors, so
/// every service answers a blip the same way (UNAVAILABLE, retry) and a lost race the same way
/// (ABORTED, retry) instead of INTERNAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbFailure {
    /// The database could not be reached or dropped the connection (a restart, a failover, a
    /// terminated backend, an exhausted pool, a cancelled statement): trying again later may
    /// succeed. A connection lost during COMMIT leaves the outcome unknown, which is why every
    /// write the services retry is idempotent (keys, conditional updates).
    Unreachable,
    /// The database broke a lock cycle or a serialization conflict (Postgres 40P01, 40001) or
    /// SQLite stayed locked past the busy timeout: nothing was written; retry.
    Conflict,
    /// Anything else: data the database refuses, a defect. Trying again fails the same way.
    Other,
}

impl DbFailure {
    /// Classifies `error`, by SQLSTATE where the driver gives one.
    pub fn of(error: &sea_orm::DbErr) -> Self {
        use sea_orm::sqlx::Error as Sqlx;
        use sea_orm::{DbErr, RuntimeErr};
        let sqlx = match error {
            DbErr::ConnectionAcquire(_) => return Self::Unreachable,
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
            DbErr::Conn(_) => return Self::Unreachable,
            _ => return Self::Other,
        };
        match sqlx.as_ref() {
            Sqlx::Io(_)
            | Sqlx::Tls(_)
            | Sqlx::PoolTimedOut
            | Sqlx::PoolClosed
            | Sqlx::WorkerCrashed
            | Sqlx::Protocol(_) => Self::Unreachable,
            Sqlx::Database(db) => match db.code().as_deref() {
                // serialization_failure, deadlock_detected
                Some("40001" | "40P01") => Self::Conflict,
                // admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled (a
                // statement timeout); read_only_sql_transaction (a pooled connection to a
                // primary demoted by a failover); connection_exception (08…)
                Some("57P01" | "57P02" | "57P03" | "57014" | "25006") => Self::Unreachable,
                Some(code) if code.starts_with("08") => Self::Unreachable,
                // SQLITE_BUSY and its extended codes: still locked after the busy timeout.
                Some("5" | "261" | "517" | "773") => Self::Conflict,
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(self) -> bool {
        self != Self::Other
    }
}

/// Starts a transaction that will write. On SQLite it takes the write lock at `BEGIN`
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later fails at once
/// with "database is locked" when another writer got there in between, while an immediate one
/// waits its turn (busy timeout). Postgres ignores the option and uses its row locks.
pub async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use super::*;

    /// Every pooled SQLite connection commits durably (synchronous = FULL, 2): an answer that
    /// follows a commit must survive a power loss, not only a crash of the process.
    #[tokio::test]
    async fn sqlite_commits_survive_a_power_loss_before_they_are_answered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _) = open_sqlite(dir.path(), "orders", 4).await.expect("open");
        for _ in 0..4 {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    "PRAGMA synchronous",
                ))
                .await
                .expect("pragma")
                .expect("a row");
            let level: i32 = row.try_get_by_index(0).expect("level");
            assert_eq!(level, 2, "synchronous = FULL");
        }
    }

    /// Driver failures are read in one place: a dropped connection or an exhausted pool is
    /// UNREACHABLE, a broken lock cycle or serialization conflict is a CONFLICT, the rest is
    /// OTHER (it would fail the same way again).
    #[test]
    fn failures_without_a_server_are_classified_by_kind() {
        use std::sync::Arc;

        use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, sqlx};
        let sqlx_err = |e: sqlx::Error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)));
        let cases = [
            (
                DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                DbFailure::Unreachable,
            ),
            (sqlx_err(sqlx::Error::PoolTimedOut), DbFailure::Unreachable),
            (sqlx_err(sqlx::Error::PoolClosed), DbFailure::Unreachable),
            (
                sqlx_err(sqlx::Error::Io(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))),
                DbFailure::Unreachable,
            ),
            (sqlx_err(sqlx::Error::RowNotFound), DbFailure::Other),
            (DbErr::Custom("a defect".into()), DbFailure::Other),
            (DbErr::RecordNotFound("x".into()), DbFailure::Other),
        ];
        for (error, expected) in cases {
            assert_eq!(DbFailure::of(&error), expected, "{error}");
        }
    }

    /// The SQLSTATEs Postgres really sends, raised by the server itself: a terminated backend
    /// (what a failover or `pg_terminate_backend` does) is UNREACHABLE, a deadlock or
    /// serialization failure a CONFLICT, a constraint violation OTHER.
    #[tokio::test]
    async fn postgres_failures_are_classified_by_their_sqlstate() {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            return crate::testing::skip_or_fail("Postgres", "DATABASE_URL");
        };
        let db = Database::connect(url.as_str()).await.expect("connect");
        for (code, expected) in [
            ("40001", DbFailure::Conflict),
            ("40P01", DbFailure::Conflict),
            ("57P01", DbFailure::Unreachable),
            ("57014", DbFailure::Unreachable),
            ("25006", DbFailure::Unreachable),
            ("08006", DbFailure::Unreachable),
            ("23505", DbFailure::Other),
            ("22023", DbFailure::Other),
        ] {
            let error = db
                .execute_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!(
                        "DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$"
                    ),
                ))
                .await
                .expect_err("raised");
            assert_eq!(DbFailure::of(&error), expected, "{code}: {error}");
        }
        // And a real termination of the statement's own backend.
        let own = Database::connect(url.as_str()).await.expect("connect");
        let error = own
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_terminate_backend(pg_backend_pid())",
            ))
            .await
            .expect_err("terminated");
        assert_eq!(DbFailure::of(&error), DbFailure::Unreachable, "{error}");
    }
}
