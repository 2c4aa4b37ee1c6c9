//! The inproc mode's baseline: a bare batched SQL loop on the same
//! database, with nothing of a supervisor around it.
//!
//! `n` rows are inserted in batches of 1,000 (as the supervised run
//! enqueues them), then, until none is left: one `UPDATE … RETURNING`
//! claims the next `batch` pending rows, each runs the same handler as a
//! tokio task, and one batched `UPDATE` records their ends. The database's
//! settings are the store's own (SQLite: WAL, `synchronous = NORMAL`, one
//! writer connection). No supervisor that records every execution in that
//! database can go faster than this loop; the supervised run's ratio to it
//! is what the supervisor's own work costs.

use super::baseline::{baseline_row, run_handler};
use super::ms;
use crate::failure::CliError;
use jobvisor_worker::Handler;
use serde_json::Value;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The loop itself, written once for both pools (the statements are the
/// same text on both backends).
macro_rules! run_loop {
    ($pool:expr, $table:expr, $handler:expr, $payload:expr, $n:expr, $batch:expr, $failed:expr, $mysql:expr) => {{
        let (pool, table) = (&$pool, &$table);
        sqlx::query(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, status VARCHAR(16) NOT NULL, \
             payload TEXT NOT NULL, enqueued_at BIGINT NOT NULL, started_at BIGINT, \
             finished_at BIGINT)"
        ))
        .execute(pool)
        .await
        .map_err($failed)?;
        // MySQL has no partial index: one led by the status.
        sqlx::query(&if $mysql {
            format!("CREATE INDEX {table}_pending ON {table} (status, id)")
        } else {
            format!("CREATE INDEX {table}_pending ON {table} (id) WHERE status = 'pending'")
        })
        .execute(pool)
        .await
        .map_err($failed)?;
        let t0 = Instant::now();
        let micros = || t0.elapsed().as_micros() as i64;
        let mut next = 0;
        while next < $n {
            let take = INSERT_BATCH.min($n - next);
            let mut q = sqlx::QueryBuilder::new(format!(
                "INSERT INTO {table} (id, status, payload, enqueued_at) "
            ));
            let at = micros();
            q.push_values(next..next + take, |mut b, i| {
                b.push_bind(i as i64)
                    .push("'pending'")
                    .push_bind($payload.as_str())
                    .push_bind(at);
            });
            q.build().execute(pool).await.map_err($failed)?;
            next += take;
        }
        let claim = format!(
            "UPDATE {table} SET status = 'running', started_at = $1 WHERE id IN \
             (SELECT id FROM {table} WHERE status = 'pending' ORDER BY id LIMIT $2) \
             RETURNING id, payload, enqueued_at"
        );
        // MySQL has no RETURNING: the rows are locked, then updated, in
        // one transaction.
        let pick = format!(
            "SELECT id, payload, enqueued_at FROM {table} WHERE status = 'pending' \
             ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED"
        );
        let (mut starts, mut totals) = (Vec::with_capacity($n), Vec::with_capacity($n));
        loop {
            let rows: Vec<(i64, String, i64)> = if $mysql {
                let mut tx = pool.begin().await.map_err($failed)?;
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(&pick)
                    .bind($batch as i64)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($failed)?;
                if !rows.is_empty() {
                    let mut q = sqlx::QueryBuilder::new(format!(
                        "UPDATE {table} SET status = 'running', started_at = "
                    ));
                    q.push_bind(micros()).push(" WHERE id IN (");
                    let mut ids = q.separated(", ");
                    for (id, _, _) in &rows {
                        ids.push_bind(*id);
                    }
                    q.push(")");
                    q.build().execute(&mut *tx).await.map_err($failed)?;
                }
                tx.commit().await.map_err($failed)?;
                rows
            } else {
                sqlx::query_as(&claim)
                    .bind(micros())
                    .bind($batch as i64)
                    .fetch_all(pool)
                    .await
                    .map_err($failed)?
            };
            if rows.is_empty() {
                break;
            }
            let mut tasks = Vec::with_capacity(rows.len());
            for (id, payload, enqueued) in rows {
                let h = $handler.clone();
                let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                tasks.push(tokio::spawn(async move {
                    let started = t0.elapsed();
                    run_handler(h, id as usize, payload).await;
                    (id, enqueued, started, t0.elapsed())
                }));
            }
            let mut ends = Vec::with_capacity(tasks.len());
            for t in tasks {
                let (id, enqueued, started, ended) = t.await.expect("bare loop task");
                let enqueued = Duration::from_micros(enqueued as u64);
                starts.push(ms(started.saturating_sub(enqueued)));
                totals.push(ms(ended.saturating_sub(enqueued)));
                ends.push((id, ended.as_micros() as i64));
            }
            if $mysql {
                // MySQL joins its row source, written as SELECTs.
                let mut q = sqlx::QueryBuilder::new(format!("UPDATE {table} JOIN ("));
                for (i, (id, at)) in ends.into_iter().enumerate() {
                    q.push(if i == 0 {
                        "SELECT "
                    } else {
                        " UNION ALL SELECT "
                    });
                    q.push_bind(id)
                        .push(" AS column1, ")
                        .push_bind(at)
                        .push(" AS column2");
                }
                q.push(format!(
                    ") AS v ON {table}.id = v.column1 \
                     SET status = 'succeeded', finished_at = v.column2"
                ));
                q.build().execute(pool).await.map_err($failed)?;
            } else {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "UPDATE {table} SET status = 'succeeded', finished_at = v.column2 FROM ("
                ));
                q.push_values(ends, |mut b, (id, at)| {
                    b.push_bind(id).push_bind(at);
                });
                q.push(format!(") AS v WHERE {table}.id = v.column1"));
                q.build().execute(pool).await.map_err($failed)?;
            }
        }
        let elapsed = t0.elapsed();
        let done: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'"
        ))
        .fetch_one(pool)
        .await
        .map_err($failed)?;
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(pool)
            .await
            .map_err($failed)?;
        if done as usize != $n {
            return Err(crate::failure::input(format!(
                "bare SQL loop: {done} of {} rows ended",
                $n
            )));
        }
        (elapsed, starts, totals)
    }};
}

/// Rows inserted per statement.
const INSERT_BATCH: usize = 1_000;

/// Runs the loop on `db` (a PostgreSQL or MySQL URL: the same database; a
/// SQLite path or URL: a fresh file beside it) over `n` executions of `handler`,
/// claiming `batch` at a time.
pub(super) async fn bare_sql_loop(
    db: &str,
    handler: Arc<dyn Handler>,
    payload: &Value,
    n: usize,
    batch: usize,
) -> Result<super::BenchRow, CliError> {
    let table = format!("bench_bare_{}", uuid::Uuid::now_v7().simple());
    let failed = |e: sqlx::Error| crate::failure::input(format!("bare SQL loop: {e}"));
    let payload = payload.to_string();
    let batch = batch.max(1);
    let (elapsed, starts, totals) = if db.starts_with("postgres") {
        let opts = sqlx::postgres::PgConnectOptions::from_str(db).map_err(failed)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(failed)?;
        run_loop!(pool, table, handler, payload, n, batch, failed, false)
    } else if db.starts_with("mysql") || db.starts_with("mariadb") {
        let url = db.replacen("mariadb://", "mysql://", 1);
        let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url).map_err(failed)?;
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(failed)?;
        run_loop!(pool, table, handler, payload, n, batch, failed, true)
    } else {
        // The store's own settings, on a file of its own beside `db`.
        let opts = jobvisor::store::sqlite_options(db).map_err(failed)?;
        let file = format!("{}-bare", opts.get_filename().display());
        let opts = opts.filename(file);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(failed)?;
        run_loop!(pool, table, handler, payload, n, batch, failed, false)
    };
    Ok(baseline_row(
        "baseline: bare batched SQL loop",
        elapsed,
        starts,
        totals,
    ))
}
