//! SQLite implementation: the embedded default.
//!
//! One writer connection (SQLite has one writer anyway; queueing in the pool
//! is cheaper than busy-waiting on the file lock) and a small pool of
//! readers, all in WAL mode.

use super::{
    Batch, CancelRequest, Claimed, ExecFilter, Finished, ForeignRunning, NodeInfo, Store,
    StoreError,
};
use crate::model::{
    format_micros, Execution, HandlerSpec, LogEntry, Micros, Mode, NewExecution, ProgressState,
    RetryPolicy, Status,
};
use async_trait::async_trait;
use jobvisor_worker::Level;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// Rows per multi-row INSERT: 7 binds each stays far below SQLite's limit.
const LOG_ROWS_PER_INSERT: usize = 1000;

/// The SQLite store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: Option<std::path::PathBuf>,
}

/// Takes an exclusive advisory lock on directory `path`, polling so as not
/// to block a runtime thread.
async fn lock_dir(path: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, StoreError> {
    use nix::fcntl::{Flock, FlockArg};
    let io = |e: std::io::Error| StoreError::Open {
        url: path.display().to_string(),
        source: sqlx::Error::Io(e),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                file = f;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((_, e)) => return Err(io(e.into())),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`: `sqlite://PATH`,
    /// `sqlite::memory:` is refused (each pool would get its own), or a path.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let base = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(open_err)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let opts = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-4000")
            .pragma("temp_store", "memory");
        // Switching a new file to WAL needs a moment of exclusive access,
        // which another process opening it at the same time may hold.
        let mut tries = 0;
        let writer = loop {
            let attempt = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(opts.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(0..80))).await;
                }
                Err(e) => return Err(open_err(e)),
            }
        };
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone().create_if_missing(false))
            .await
            .map_err(open_err)?;
        let path = Some(opts.get_filename().to_path_buf())
            .filter(|p| p.is_file())
            .map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(Self {
            writer,
            reader,
            path,
        })
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock.
fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "6" | "517")))
}

fn corrupt(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
}

fn parse_json(what: &'static str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(what)(Box::new(e))))
        .transpose()
}

fn execution_from_row(row: &SqliteRow) -> Result<Execution, StoreError> {
    let mode: String = row.try_get("mode")?;
    let status: String = row.try_get("status")?;
    let enqueued_at: Micros = row.try_get("enqueued_at")?;
    let started_at: Option<Micros> = row.try_get("started_at")?;
    let finished_at: Option<Micros> = row.try_get("finished_at")?;
    let payload: String = row.try_get("payload")?;
    Ok(Execution {
        id: row.try_get("id")?,
        job: row.try_get("job")?,
        handler: row.try_get("handler")?,
        mode: Mode::from_str(&mode).map_err(|e| corrupt("executions.mode")(e.into()))?,
        status: Status::from_str(&status).map_err(|e| corrupt("executions.status")(e.into()))?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        previous_id: row.try_get("previous_id")?,
        next_id: row.try_get("next_id")?,
        payload: parse_json("executions.payload", Some(payload))?.unwrap_or(Value::Null),
        priority: row.try_get::<i64, _>("priority")? as i32,
        timeout_ms: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .map(|t| t as u64),
        enqueued_at: format_micros(enqueued_at),
        run_at: format_micros(row.try_get("run_at")?),
        started_at: started_at.map(format_micros),
        finished_at: finished_at.map(format_micros),
        node: row.try_get("node")?,
        pid: row.try_get("pid")?,
        exit_code: row.try_get("exit_code")?,
        signal: row.try_get("signal")?,
        progress: ProgressState {
            percent: row.try_get("progress_percent")?,
            message: row.try_get("progress_message")?,
            done: row.try_get("progress_done")?,
            total: row.try_get("progress_total")?,
        },
        output: parse_json("executions.output", row.try_get("output")?)?,
        error: row.try_get("error")?,
        timed_out: row.try_get::<i64, _>("timed_out")? != 0,
        interrupted: row.try_get::<i64, _>("interrupted")? != 0,
        cancel_requested_at: row
            .try_get::<Option<Micros>, _>("cancel_requested_at")?
            .map(format_micros),
        cancel_reason: row.try_get("cancel_reason")?,
        cancel_outcome: row.try_get("cancel_outcome")?,
        duration_ms: match (started_at, finished_at) {
            (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
            _ => None,
        },
    })
}

fn node_from_row(row: &SqliteRow, prefix: &str) -> Result<Option<NodeInfo>, StoreError> {
    let col = |c: &str| format!("{prefix}{c}");
    let id: Option<String> = row.try_get(col("id").as_str())?;
    let Some(id) = id else { return Ok(None) };
    Ok(Some(NodeInfo {
        id,
        hostname: row.try_get(col("hostname").as_str())?,
        pid: row.try_get(col("pid").as_str())?,
        started_at: row.try_get(col("started_at").as_str())?,
        heartbeat_at: row.try_get(col("heartbeat_at").as_str())?,
        stopped_at: row.try_get(col("stopped_at").as_str())?,
    }))
}

/// Inserts the next attempt of failed execution `c` after its backoff, and
/// links the two.
async fn schedule_retry(
    conn: &mut sqlx::SqliteConnection,
    c: &super::Completion,
    attempt: u32,
) -> Result<Uuid, StoreError> {
    let row = sqlx::query(
        "SELECT job, handler, mode, payload, max_attempts, backoff_base_ms, backoff_cap_ms, \
                timeout_ms, priority FROM executions WHERE id = ?",
    )
    .bind(c.id)
    .fetch_one(&mut *conn)
    .await?;
    let retry = RetryPolicy {
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        backoff_base_ms: row.try_get::<i64, _>("backoff_base_ms")? as u64,
        backoff_cap_ms: row.try_get::<i64, _>("backoff_cap_ms")? as u64,
    };
    let mode: String = row.try_get("mode")?;
    let payload: String = row.try_get("payload")?;
    let next = NewExecution {
        id: Uuid::now_v7(),
        job: row.try_get("job")?,
        handler: row.try_get("handler")?,
        mode: Mode::from_str(&mode).map_err(|e| corrupt("executions.mode")(e.into()))?,
        payload: parse_json("executions.payload", Some(payload))?.unwrap_or(Value::Null),
        retry,
        timeout_ms: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .map(|t| t as u64),
        priority: row.try_get::<i64, _>("priority")? as i32,
        run_at: c.finished_at + retry.delay_before(attempt + 1).as_micros() as Micros,
        attempt: attempt + 1,
        previous_id: Some(c.id),
    };
    insert_executions(conn, std::slice::from_ref(&next), c.finished_at).await?;
    sqlx::query("UPDATE executions SET next_id = ?2 WHERE id = ?1")
        .bind(c.id)
        .bind(next.id)
        .execute(&mut *conn)
        .await?;
    Ok(next.id)
}

async fn insert_executions(
    conn: &mut sqlx::SqliteConnection,
    execs: &[NewExecution],
    now: Micros,
) -> Result<(), StoreError> {
    for chunk in execs.chunks(500) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO executions (id, job, handler, mode, payload, status, attempt, \
             max_attempts, backoff_base_ms, backoff_cap_ms, previous_id, timeout_ms, priority, \
             enqueued_at, run_at) ",
        );
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.id)
                .push_bind(&e.job)
                .push_bind(&e.handler)
                .push_bind(e.mode.as_str())
                .push_bind(e.payload.to_string())
                .push_bind("pending")
                .push_bind(e.attempt as i64)
                .push_bind(e.retry.max_attempts as i64)
                .push_bind(e.retry.backoff_base_ms as i64)
                .push_bind(e.retry.backoff_cap_ms as i64)
                .push_bind(e.previous_id)
                .push_bind(e.timeout_ms.map(|t| t as i64))
                .push_bind(e.priority as i64)
                .push_bind(now)
                .push_bind(e.run_at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // SQLite gives sqlx's migrator no lock across processes, and two
        // processes migrating a new file at once trip over each other. An
        // advisory flock on the database's directory serializes them. (Not
        // on the file itself: closing any descriptor of the database file
        // drops every POSIX lock this process's connections hold on it.)
        let _lock = match self.path.as_ref().and_then(|p| p.parent()) {
            Some(dir) => Some(lock_dir(dir).await?),
            None => None,
        };
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn put_handler(&self, spec: &HandlerSpec, now: Micros) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).expect("handler specs serialize");
        sqlx::query(
            "INSERT INTO handlers (name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
        )
        .bind(&spec.name)
        .bind(json)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn handler(&self, name: &str) -> Result<Option<HandlerSpec>, StoreError> {
        let spec: Option<String> = sqlx::query_scalar("SELECT spec FROM handlers WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        spec.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("handlers.spec")(Box::new(e))))
            .transpose()
    }

    async fn handlers(&self) -> Result<Vec<HandlerSpec>, StoreError> {
        let specs: Vec<String> = sqlx::query_scalar("SELECT spec FROM handlers ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        specs
            .iter()
            .map(|s| serde_json::from_str(s).map_err(|e| corrupt("handlers.spec")(Box::new(e))))
            .collect()
    }

    async fn remove_handler(&self, name: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM handlers WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn enqueue(&self, execs: &[NewExecution], now: Micros) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_executions(&mut tx, execs, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(
        &self,
        node: &str,
        limit: usize,
        now: Micros,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(
            "UPDATE executions SET status = 'running', started_at = ?1, node = ?2 \
             WHERE id IN (SELECT id FROM executions WHERE status = 'pending' AND run_at <= ?1 \
                          ORDER BY priority DESC, run_at, id LIMIT ?3) \
             RETURNING id, job, handler, mode, payload, attempt, timeout_ms, enqueued_at, \
                       cancel_requested_at, \
                       (SELECT spec FROM handlers h WHERE h.name = executions.handler) AS spec",
        )
        .bind(now)
        .bind(node)
        .bind(limit as i64)
        .fetch_all(&self.writer)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let mode: String = row.try_get("mode")?;
            let payload: String = row.try_get("payload")?;
            claimed.push(Claimed {
                id: row.try_get("id")?,
                job: row.try_get("job")?,
                handler: row.try_get("handler")?,
                mode: Mode::from_str(&mode).map_err(|e| corrupt("executions.mode")(e.into()))?,
                payload: parse_json("executions.payload", Some(payload))?.unwrap_or(Value::Null),
                attempt: row.try_get::<i64, _>("attempt")? as u32,
                timeout_ms: row
                    .try_get::<Option<i64>, _>("timeout_ms")?
                    .map(|t| t as u64),
                enqueued_at: row.try_get("enqueued_at")?,
                started_at: now,
                cancel_requested: row
                    .try_get::<Option<i64>, _>("cancel_requested_at")?
                    .is_some(),
                handler_spec: row.try_get("spec")?,
            });
        }
        // RETURNING gives no order; run the best first.
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn apply(&self, batch: &Batch) -> Result<Vec<Finished>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in batch.logs.chunks(LOG_ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR IGNORE INTO logs (execution_id, seq, ts, level, stream, message, fields) ",
            );
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(l.execution_id)
                    .push_bind(l.seq)
                    .push_bind(l.ts)
                    .push_bind(l.level)
                    .push_bind(l.stream)
                    .push_bind(&l.message)
                    .push_bind(l.fields.as_deref());
            });
            qb.build().execute(&mut *tx).await?;
        }
        // Every statement is a round trip to SQLite's connection thread, so
        // each kind of update is one statement per chunk of rows
        // (UPDATE ... FROM (VALUES ...)), never one per execution.
        for chunk in batch.progress.chunks(4000) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE executions SET \
                 progress_percent = COALESCE(v.column2, progress_percent), \
                 progress_message = COALESCE(v.column3, progress_message), \
                 progress_done = COALESCE(v.column4, progress_done), \
                 progress_total = COALESCE(v.column5, progress_total) FROM (",
            );
            qb.push_values(chunk, |mut b, (id, p)| {
                b.push_bind(id)
                    .push_bind(p.percent)
                    .push_bind(p.message.as_deref())
                    .push_bind(p.done)
                    .push_bind(p.total);
            });
            qb.push(") AS v WHERE executions.id = v.column1");
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in batch.pids.chunks(10000) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE executions SET pid = v.column2 FROM (");
            qb.push_values(chunk, |mut b, (id, pid)| {
                b.push_bind(id).push_bind(pid);
            });
            qb.push(") AS v WHERE executions.id = v.column1");
            qb.build().execute(&mut *tx).await?;
        }
        let mut finished = Vec::with_capacity(batch.completions.len());
        for chunk in batch.completions.chunks(2000) {
            // Only a running execution can complete: a late or duplicate
            // completion (e.g. after a rescue) changes nothing.
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "UPDATE executions SET status = v.column2, finished_at = v.column3, \
                 output = v.column4, error = v.column5, exit_code = v.column6, \
                 signal = v.column7, timed_out = v.column8, interrupted = v.column9, \
                 cancel_outcome = v.column10 FROM (",
            );
            qb.push_values(chunk, |mut b, c| {
                b.push_bind(c.id)
                    .push_bind(c.status.as_str())
                    .push_bind(c.finished_at)
                    .push_bind(c.output.as_ref().map(Value::to_string))
                    .push_bind(c.error.as_deref())
                    .push_bind(c.exit_code)
                    .push_bind(c.signal.as_deref())
                    .push_bind(c.timed_out as i64)
                    .push_bind(c.interrupted as i64)
                    .push_bind(c.cancel_outcome.as_deref());
            });
            qb.push(
                ") AS v WHERE executions.id = v.column1 AND executions.status = 'running' \
                 RETURNING executions.id AS id, executions.attempt AS attempt, \
                 executions.max_attempts AS max_attempts",
            );
            let rows = qb.build().fetch_all(&mut *tx).await?;
            let mut applied = std::collections::HashMap::with_capacity(rows.len());
            for row in rows {
                let id: Uuid = row.try_get("id")?;
                let attempt = row.try_get::<i64, _>("attempt")? as u32;
                let max = row.try_get::<i64, _>("max_attempts")? as u32;
                applied.insert(id, (attempt, max));
            }
            for c in chunk {
                let Some(&(attempt, max)) = applied.get(&c.id) else {
                    continue;
                };
                let retry = if c.status == Status::Failed && c.retryable && attempt < max {
                    Some(schedule_retry(&mut tx, c, attempt).await?)
                } else {
                    None
                };
                finished.push(Finished {
                    id: c.id,
                    status: c.status,
                    retry,
                });
            }
        }
        tx.commit().await?;
        Ok(finished)
    }

    async fn execution(&self, id: Uuid) -> Result<Option<Execution>, StoreError> {
        let row = sqlx::query("SELECT * FROM executions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(execution_from_row).transpose()
    }

    async fn executions(&self, filter: &ExecFilter) -> Result<Vec<Execution>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT * FROM executions WHERE 1 = 1");
        if let Some(s) = filter.status {
            qb.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(h) = &filter.handler {
            qb.push(" AND handler = ").push_bind(h.clone());
        }
        if let Some(j) = &filter.job {
            qb.push(" AND job = ").push_bind(j.clone());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit.max(1) as i64);
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn logs(
        &self,
        id: Uuid,
        after_seq: i64,
        min_level: Option<Level>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT seq, ts, level, stream, message, fields FROM logs WHERE execution_id = ",
        );
        qb.push_bind(id).push(" AND seq > ").push_bind(after_seq);
        if let Some(min) = min_level {
            let names: Vec<String> = Level::ALL
                .into_iter()
                .filter(|l| *l >= min)
                .map(|l| format!("'{}'", l.as_str()))
                .collect();
            qb.push(format!(" AND level IN ({})", names.join(",")));
        }
        qb.push(" ORDER BY seq LIMIT ").push_bind(limit as i64);
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter()
            .map(|row| {
                let level: String = row.try_get("level")?;
                let fields = parse_json("logs.fields", row.try_get("fields")?)?;
                Ok(LogEntry {
                    seq: row.try_get("seq")?,
                    ts: format_micros(row.try_get("ts")?),
                    level: level.parse().map_err(
                        |e: jobvisor_worker::protocol::UnknownLevel| {
                            corrupt("logs.level")(Box::new(e))
                        },
                    )?,
                    stream: row.try_get("stream")?,
                    message: row.try_get("message")?,
                    fields: match fields {
                        Some(Value::Object(m)) => Some(m),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    async fn request_cancel(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<CancelRequest, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(status) = status else {
            return Ok(CancelRequest::NotFound);
        };
        let status =
            Status::from_str(&status).map_err(|e| corrupt("executions.status")(e.into()))?;
        let outcome = match status {
            Status::Pending => {
                sqlx::query(
                    "UPDATE executions SET status = 'cancelled', finished_at = ?2, \
                     cancel_requested_at = ?2, cancel_reason = ?3, cancel_outcome = 'before-start', \
                     error = 'cancelled before it started' WHERE id = ?1",
                )
                .bind(id)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                CancelRequest::CancelledPending
            }
            Status::Running => {
                sqlx::query(
                    "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, ?2), \
                     cancel_reason = COALESCE(cancel_reason, ?3) WHERE id = ?1",
                )
                .bind(id)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                CancelRequest::Requested
            }
            done => CancelRequest::AlreadyFinished(done),
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn cancel_requests(&self, node: &str) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, COALESCE(cancel_reason, '') AS reason FROM executions \
             WHERE status = 'running' AND node = ? AND cancel_requested_at IS NOT NULL",
        )
        .bind(node)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("reason")?)))
            .collect()
    }

    async fn register_node(&self, node: &NodeInfo) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, hostname, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&node.id)
        .bind(&node.hostname)
        .bind(node.pid)
        .bind(node.started_at)
        .bind(node.heartbeat_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn heartbeat_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1")
            .bind(node)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn stop_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET stopped_at = ?2 WHERE id = ?1")
            .bind(node)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn live_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM nodes WHERE heartbeat_at >= ? AND stopped_at IS NULL ORDER BY started_at",
        )
        .bind(since)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .filter_map(|r| node_from_row(r, "").transpose())
            .collect()
    }

    async fn foreign_running(&self, node: &str) -> Result<Vec<ForeignRunning>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.pid AS exec_pid, n.id AS n_id, n.hostname AS n_hostname, \
                    n.pid AS n_pid, n.started_at AS n_started_at, \
                    n.heartbeat_at AS n_heartbeat_at, n.stopped_at AS n_stopped_at \
             FROM executions e LEFT JOIN nodes n ON n.id = e.node \
             WHERE e.status = 'running' AND (e.node IS NULL OR e.node != ?)",
        )
        .bind(node)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ForeignRunning {
                    id: r.try_get("id")?,
                    pid: r.try_get("exec_pid")?,
                    node: node_from_row(r, "n_")?,
                })
            })
            .collect()
    }
}
