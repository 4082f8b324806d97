//! The physical baselines `rentals` is measured against, in the same run:
//!
//! - Postgres: `pgbench -N` (the "simple update" TPC-B-like script: UPDATE an account, SELECT
//!   it, INSERT a history row, one transaction each) with the same client count, on a
//!   database initialised beforehand (`pgbench -i -s 10`) on the same server;
//! - SQLite: a bare loop of the same shape (UPDATE one row, INSERT one row, COMMIT) with the
//!   same client count, on a file opened exactly as the services open theirs
//!   (`sneakernet_runtime::db::open`: WAL, synchronous = FULL, `BEGIN IMMEDIATE` for writes),
//!   in the directory of the node's own files (same disk).
//!
//! Both return transactions per second over the whole interval.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Rows in the SQLite baseline's account table (pgbench -s 1 has 100,000; the contention
/// that matters here is the single writer, not the rows).
const SQLITE_ACCOUNTS: i64 = 10_000;

/// `pgbench -N -c clients -j threads -T secs` against `url`; its "tps = ..." (without the
/// initial connection time).
pub async fn pgbench(url: &str, clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let secs = duration.as_secs().max(1).to_string();
    let clients_s = clients.to_string();
    let threads = clients.clamp(1, 2).to_string();
    let output = tokio::process::Command::new("pgbench")
        .args([
            "-N", "-n", "-c", &clients_s, "-j", &threads, "-T", &secs, url,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run pgbench (is it installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_pgbench_tps(&stdout)
        .with_context(|| format!("pgbench printed no tps line: {}", stdout.trim()))
}

/// The number of pgbench's `tps = N (without initial connection time)` line.
fn parse_pgbench_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .filter(|line| line.starts_with("tps = "))
        .find(|line| line.contains("without initial connection time"))
        .or_else(|| stdout.lines().find(|line| line.starts_with("tps = ")))
        .and_then(|line| line.trim_start_matches("tps = ").split(' ').next())
        .and_then(|n| n.parse().ok())
}

/// `clients` tasks doing UPDATE + INSERT transactions for `duration` on `dir/bench.db`,
/// opened as the services open theirs; transactions per second.
pub async fn sqlite_loop(dir: &Path, clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let config = sneakernet_runtime::Config {
        data_dir: dir.to_owned(),
        database_url: None,
        ..sneakernet_runtime::Config::default()
    };
    let (db, _) = sneakernet_runtime::db::open(&config, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("open the SQLite baseline: {e}"))?;
    for sql in [
        "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, account INTEGER NOT NULL, delta INTEGER NOT NULL, at TEXT NOT NULL)",
        "DELETE FROM history",
        "DELETE FROM accounts",
    ] {
        db.execute_raw(Statement::from_string(DbBackend::Sqlite, sql))
            .await?;
    }
    db.execute_raw(Statement::from_string(
        DbBackend::Sqlite,
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {SQLITE_ACCOUNTS}) \
             INSERT INTO accounts SELECT i, 0 FROM n"
        ),
    ))
    .await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let db = db.clone();
        let done = done.clone();
        tasks.spawn(async move {
            let mut n: i64 = client as i64;
            while started.elapsed() < duration {
                n = (n * 7919 + 13) % SQLITE_ACCOUNTS;
                let txn = sneakernet_runtime::db::begin_write(&db).await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "UPDATE accounts SET balance = balance + 1 WHERE id = ?",
                    [(n + 1).into()],
                ))
                .await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "INSERT INTO history (account, delta, at) VALUES (?, 1, ?)",
                    [(n + 1).into(), chrono::Utc::now().to_rfc3339().into()],
                ))
                .await?;
                txn.commit().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a baseline client panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    db.close().await.ok();
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_tps_is_read_from_the_line_without_connection_time() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 3.1 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 1234.567890 (without initial connection time)\n";
        assert_eq!(parse_pgbench_tps(out), Some(1234.56789));
        assert_eq!(parse_pgbench_tps("nothing here"), None);
    }
}
