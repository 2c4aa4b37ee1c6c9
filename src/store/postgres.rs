//! PostgreSQL implementation: several supervisors on several machines share
//! one database. Same tables, same behaviour as the SQLite store; claims lock
//! rows with `FOR UPDATE SKIP LOCKED` so concurrent claimers never take the
//! same execution, and a limited claim serializes on an advisory lock so
//! queue limits hold across nodes.

use super::{
    Batch, CancelRequest, Claimed, ExecFilter, Finished, ForeignRunning, NodeInfo, Store,
    StoreError,
};
use super::{IdleDaemon, JobAdvance, JobStats, QueueInfo};
use crate::model::{
    format_micros, Execution, HandlerSpec, Job, JobSpec, LogEntry, Micros, Mode, NewExecution,
    Overlap, ProgressState, RetryPolicy, Status,
};
use crate::schedule::Misfire;
use async_trait::async_trait;
use jobvisor_worker::Level;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

// Best first, within each queue's and each job's free slots. The
// candidates are the best few pending rows (index order) of queues
// and jobs that are neither paused nor full; the window functions
// then hand out the free slots among them.
const CLAIM_LIMITED: &str = "UPDATE executions SET status = 'running', started_at = $1, node = $2 WHERE id IN ( \
       WITH busy_q AS (SELECT queue, COUNT(*) AS n FROM executions \
               WHERE status = 'running' GROUP BY queue), \
            busy_j AS (SELECT job, COUNT(*) AS n FROM executions \
               WHERE status = 'running' GROUP BY job), \
            caps_j AS (SELECT name, CASE WHEN overlap = 'queue' \
                 THEN LEAST(COALESCE(max_parallel, 1), 1) ELSE max_parallel END AS cap \
               FROM jobs), \
            blocked_q AS (SELECT q.name FROM queues q LEFT JOIN busy_q b ON b.queue = q.name \
               WHERE q.paused = 1 OR COALESCE(b.n, 0) >= q.max_running), \
            blocked_j AS (SELECT c.name FROM caps_j c JOIN busy_j b ON b.job = c.name \
               WHERE b.n >= c.cap), \
            cand AS (SELECT id, job, queue, priority, run_at FROM executions \
             WHERE status = 'pending' AND run_at <= $1 \
               AND queue NOT IN (SELECT name FROM blocked_q) \
               AND job NOT IN (SELECT name FROM blocked_j) \
             ORDER BY priority DESC, run_at, id LIMIT $4), \
            ranked AS (SELECT c.id, c.priority, c.run_at, \
        ROW_NUMBER() OVER (PARTITION BY c.queue ORDER BY c.priority DESC, c.run_at, c.id) AS qn, \
        ROW_NUMBER() OVER (PARTITION BY c.job ORDER BY c.priority DESC, c.run_at, c.id) AS jn, \
        q.max_running - COALESCE(bq.n, 0) AS qfree, \
        cj.cap - COALESCE(bj.n, 0) AS jfree \
              FROM cand c LEFT JOIN queues q ON q.name = c.queue \
        LEFT JOIN busy_q bq ON bq.queue = c.queue \
        LEFT JOIN caps_j cj ON cj.name = c.job \
        LEFT JOIN busy_j bj ON bj.job = c.job) \
       SELECT id FROM ranked WHERE (qfree IS NULL OR qn <= qfree) AND (jfree IS NULL OR jn <= jfree) \
       ORDER BY priority DESC, run_at, id LIMIT $3) \
     RETURNING id, job, handler, mode, payload, attempt, timeout_ms, enqueued_at, \
       cancel_requested_at, \
       (SELECT spec FROM handlers h WHERE h.name = executions.handler) AS spec";

/// How long opening the database may wait for the server's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The claim when no limits exist: the best due rows, in index order.
const CLAIM_SIMPLE: &str = "UPDATE executions SET status = 'running', started_at = $1, node = $2 \
     WHERE id IN (SELECT id FROM executions WHERE status = 'pending' AND run_at <= $1 \
                  ORDER BY priority DESC, run_at, id LIMIT LEAST($3, $4) FOR UPDATE SKIP LOCKED) \
     RETURNING id, job, handler, mode, payload, attempt, timeout_ms, enqueued_at, \
               cancel_requested_at, \
               (SELECT spec FROM handlers h WHERE h.name = executions.handler) AS spec";

/// Rows per multi-row INSERT: 7 binds each stays far below SQLite's limit.
const LOG_ROWS_PER_INSERT: usize = 1000;

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// Whether any queue limit, paused queue or per-job cap exists, and when
    /// that was last read: without any, claiming needs no window functions.
    limits: std::sync::Mutex<(Option<std::time::Instant>, bool)>,
}

/// How long the "any limits$1" answer is trusted: a new limit or a paused
/// queue takes effect on claims within this time.
const LIMITS_TTL: Duration = Duration::from_millis(250);

impl PgStore {
    /// Forgets the cached "any limits?" answer, after this store changed
    /// queues or jobs.
    fn limits_changed(&self) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = (None, true);
    }

    async fn jobs_changed(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        notify(&mut conn, "jobs").await
    }

    /// Connects to `url` (`postgres://...`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            url: super::redact(url),
            source,
        };
        let opts = PgConnectOptions::from_str(url).map_err(open_err)?;
        // One connection first, bounded: its error names the cause (refused,
        // authentication, no such database), where a pool only says that it
        // timed out, after a minute.
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            <PgConnection as sqlx::Connection>::connect_with(&opts),
        )
        .await
        {
            Err(_) => {
                return Err(open_err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ))))
            }
            Ok(Err(e)) => return Err(open_err(e)),
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        Ok(Self {
            pool,
            limits: std::sync::Mutex::new((None, true)),
        })
    }
}

use super::rows::{corrupt, parse_json, schedule_kind, LAST_LOGS_SQL};
super::rows::decoders!(PgRow);

/// Inserts the next attempt of failed execution `c` after its backoff, and
/// links the two.
async fn schedule_retry(
    conn: &mut PgConnection,
    c: &super::Completion,
    attempt: u32,
) -> Result<Uuid, StoreError> {
    let row = sqlx::query(
        "SELECT job, handler, mode, payload, max_attempts, backoff_base_ms, backoff_cap_ms, \
                timeout_ms, priority, queue FROM executions WHERE id = $1",
    )
    .bind(c.id)
    .fetch_one(&mut *conn)
    .await?;
    let retry = RetryPolicy {
        max_attempts: (row.try_get::<i64, _>("max_attempts")? as u32)
            .max(attempt + u32::from(c.interrupted)),
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
        run_at: if c.interrupted {
            c.finished_at
        } else {
            c.finished_at + retry.delay_before(attempt + 1).as_micros() as Micros
        },
        attempt: attempt + 1,
        previous_id: Some(c.id),
        queue: row.try_get("queue")?,
        occurrence: None,
    };
    insert_executions(conn, std::slice::from_ref(&next), c.finished_at).await?;
    sqlx::query("UPDATE executions SET next_id = $2 WHERE id = $1")
        .bind(c.id)
        .bind(next.id)
        .execute(&mut *conn)
        .await?;
    Ok(next.id)
}

/// The INSERT of `execs` (an existing (job, occurrence) is ignored).
fn execution_insert<'a>(
    execs: impl IntoIterator<Item = &'a NewExecution>,
    now: Micros,
) -> QueryBuilder<'a, Postgres> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO executions (id, job, handler, mode, payload, status, attempt, \
         max_attempts, backoff_base_ms, backoff_cap_ms, previous_id, timeout_ms, priority, \
         enqueued_at, run_at, queue, occurrence) ",
    );
    qb.push_values(execs, |mut b, e| {
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
            .push_bind(e.run_at)
            .push_bind(&e.queue)
            .push_bind(e.occurrence);
    });
    qb
}

/// Inserts executions, returning the ids actually inserted.
async fn insert_executions_returning(
    conn: &mut PgConnection,
    execs: &[&NewExecution],
    now: Micros,
) -> Result<std::collections::HashSet<Uuid>, StoreError> {
    let mut qb = execution_insert(execs.iter().copied(), now);
    qb.push(" ON CONFLICT DO NOTHING RETURNING id");
    Ok(qb
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect())
}

async fn insert_executions(
    conn: &mut PgConnection,
    execs: &[NewExecution],
    now: Micros,
) -> Result<(), StoreError> {
    // 17 binds a row: 1500 rows stay below SQLite's bind limit.
    for chunk in execs.chunks(1500) {
        execution_insert(chunk, now)
            .build()
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The channel on which nodes wake each other up.
const CHANNEL: &str = "jobvisor";

/// Tells every listening node that something happened (delivered on commit).
async fn notify(conn: &mut PgConnection, what: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(what)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn listen(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<super::Notice>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                // The listener reconnects by itself; what is missed meanwhile
                // is found by the nodes' polling.
                match listener.recv().await {
                    Ok(n) => {
                        let notice = match n.payload() {
                            "work" => super::Notice::Work,
                            "cancel" => super::Notice::Cancel,
                            "jobs" => super::Notice::Jobs,
                            _ => continue,
                        };
                        if tx.send(notice).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx's PostgreSQL migrator takes an advisory lock: concurrent
        // nodes migrate one at a time.
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_handler(&self, spec: &HandlerSpec, now: Micros) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).expect("handler specs serialize");
        sqlx::query(
            "INSERT INTO handlers (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
        )
        .bind(&spec.name)
        .bind(json)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn handler(&self, name: &str) -> Result<Option<HandlerSpec>, StoreError> {
        let spec: Option<String> = sqlx::query_scalar("SELECT spec FROM handlers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        spec.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("handlers.spec")(Box::new(e))))
            .transpose()
    }

    async fn handlers(&self) -> Result<Vec<HandlerSpec>, StoreError> {
        let specs: Vec<String> = sqlx::query_scalar("SELECT spec FROM handlers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        specs
            .iter()
            .map(|s| serde_json::from_str(s).map_err(|e| corrupt("handlers.spec")(Box::new(e))))
            .collect()
    }

    async fn remove_handler(&self, name: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM handlers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn enqueue(&self, execs: &[NewExecution], now: Micros) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_executions(&mut tx, execs, now).await?;
        notify(&mut tx, "work").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(
        &self,
        node: &str,
        limit: usize,
        now: Micros,
    ) -> Result<Vec<Claimed>, StoreError> {
        let limited = {
            let cached = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
            match cached {
                (Some(at), v) if at.elapsed() < LIMITS_TTL => v,
                _ => {
                    let v: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM queues WHERE paused = 1 OR max_running IS NOT NULL) \
                             OR EXISTS (SELECT 1 FROM jobs WHERE max_parallel IS NOT NULL OR overlap = 'queue')",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                    *self.limits.lock().unwrap_or_else(|e| e.into_inner()) =
                        (Some(std::time::Instant::now()), v);
                    v
                }
            }
        };
        let sql = if limited { CLAIM_LIMITED } else { CLAIM_SIMPLE };
        let mut tx = self.pool.begin().await?;
        if limited {
            // Limits are counts over running rows: nodes claiming at once
            // would each see the same free slots. One limited claim at a
            // time keeps every limit exact.
            sqlx::query("SELECT pg_advisory_xact_lock(7305150916)")
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(node)
            .bind(limit as i64)
            .bind((limit * 4).max(256) as i64)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

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

    async fn has_due(&self, now: Micros) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM executions WHERE status = 'pending' AND run_at <= $1)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn apply(&self, batch: &Batch) -> Result<Vec<Finished>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in batch.logs.chunks(LOG_ROWS_PER_INSERT) {
            // Fenced: lines of an execution that is no longer running (its
            // node was presumed dead and it was rescued) are not stored.
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO logs (execution_id, seq, ts, level, stream, message, fields) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7 \
                 FROM (",
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
            qb.push(
                ") AS v WHERE EXISTS (SELECT 1 FROM executions e \
                 WHERE e.id = v.column1 AND e.status = 'running') ON CONFLICT DO NOTHING",
            );
            qb.build().execute(&mut *tx).await?;
        }
        // Every statement is a round trip to SQLite's connection thread, so
        // each kind of update is one statement per chunk of rows
        // (UPDATE ... FROM (VALUES ...)), never one per execution.
        for chunk in batch.progress.chunks(4000) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
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
            qb.push(") AS v WHERE executions.id = v.column1 AND executions.status = 'running'");
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in batch.pids.chunks(10000) {
            let mut qb: QueryBuilder<Postgres> =
                QueryBuilder::new("UPDATE executions SET pid = v.column2 FROM (");
            qb.push_values(chunk, |mut b, (id, pid)| {
                b.push_bind(id).push_bind(pid);
            });
            qb.push(") AS v WHERE executions.id = v.column1 AND executions.status = 'running'");
            qb.build().execute(&mut *tx).await?;
        }
        let mut finished = Vec::with_capacity(batch.completions.len());
        for chunk in batch.completions.chunks(2000) {
            // Only a running execution can complete: a late or duplicate
            // completion (e.g. after a rescue) changes nothing.
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
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
                // An interruption (shutdown, dead node) is not the job's
                // failure: it is always run again, on an attempt of its own.
                let again =
                    c.status == Status::Failed && (c.interrupted || (c.retryable && attempt < max));
                let retry = if again {
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
        let row = sqlx::query("SELECT * FROM executions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(execution_from_row).transpose()
    }

    async fn executions(&self, filter: &ExecFilter) -> Result<Vec<Execution>, StoreError> {
        let mut qb: QueryBuilder<Postgres> =
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
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn logs(
        &self,
        id: Uuid,
        after_seq: i64,
        min_level: Option<Level>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
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
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(log_from_row).collect()
    }

    async fn last_logs(&self, id: Uuid, n: usize) -> Result<Vec<LogEntry>, StoreError> {
        let rows = sqlx::query(LAST_LOGS_SQL)
            .bind(id)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(log_from_row).collect()
    }

    async fn request_cancel(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<CancelRequest, StoreError> {
        let mut tx = self.pool.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = $1 FOR UPDATE")
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
                    "UPDATE executions SET status = 'cancelled', finished_at = $2, \
                     cancel_requested_at = $2, cancel_reason = $3, cancel_outcome = 'before-start', \
                     error = 'cancelled before it started' WHERE id = $1",
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
                    "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, $2), \
                     cancel_reason = COALESCE(cancel_reason, $3) WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                notify(&mut tx, "cancel").await?;
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
             WHERE status = 'running' AND node = $1 AND cancel_requested_at IS NOT NULL",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("reason")?)))
            .collect()
    }

    async fn register_node(&self, node: &NodeInfo) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, hostname, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&node.id)
        .bind(&node.hostname)
        .bind(node.pid)
        .bind(node.started_at)
        .bind(node.heartbeat_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn heartbeat_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1")
            .bind(node)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn stop_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET stopped_at = $2 WHERE id = $1")
            .bind(node)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn live_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM nodes WHERE heartbeat_at >= $1 AND stopped_at IS NULL ORDER BY started_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
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
             WHERE e.status = 'running' AND (e.node IS NULL OR e.node != $1)",
        )
        .bind(node)
        .fetch_all(&self.pool)
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

    async fn insert_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO jobs (name, handler, mode, payload, kind, schedule, priority, \
             queue, retries, backoff_ms, timeout_ms, overlap, misfire, max_parallel, max_runs, \
             start_at, end_at, paused, next_run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&spec.name)
        .bind(&spec.handler)
        .bind(spec.mode.map(Mode::as_str))
        .bind(spec.payload.to_string())
        .bind(schedule_kind(&spec.schedule))
        .bind(serde_json::to_string(&spec.schedule).expect("schedules serialize"))
        .bind(spec.priority as i64)
        .bind(&spec.queue)
        .bind(spec.retries as i64)
        .bind(spec.backoff_ms as i64)
        .bind(spec.timeout_ms.map(|v| v as i64))
        .bind(spec.overlap.as_str())
        .bind(match spec.misfire {
            Misfire::RunOnce => "run-once",
            Misfire::Skip => "skip",
        })
        .bind(spec.max_parallel.map(|v| v as i64))
        .bind(spec.max_runs.map(|v| v.min(i64::MAX as u64) as i64))
        .bind(spec.start_at)
        .bind(spec.end_at)
        .bind(spec.paused as i64)
        .bind(next_run_at)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.jobs_changed().await?;
        // A job may bring a per-job cap: claims must look at once.
        self.limits_changed();
        Ok(r.rows_affected() == 1)
    }

    async fn job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn remove_job(&self, name: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM jobs WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.jobs_changed().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_job_paused(
        &self,
        name: &str,
        paused: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE jobs SET paused = $2, updated_at = $3 WHERE name = $1")
            .bind(name)
            .bind(paused as i64)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.jobs_changed().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn due_jobs(&self, now: Micros, limit: usize) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= $1 \
             ORDER BY next_run_at LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn next_due(&self) -> Result<Option<Micros>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_run_at) FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn active_jobs(
        &self,
        names: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for chunk in names.chunks(5000) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "SELECT DISTINCT job FROM executions WHERE status IN ('pending', 'running') AND job IN (",
            );
            let mut sep = qb.separated(", ");
            for n in chunk {
                sep.push_bind(n);
            }
            qb.push(")");
            let rows: Vec<String> = qb.build_query_scalar().fetch_all(&self.pool).await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn active_executions(&self, job: &str) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM executions WHERE job = $1 AND status IN ('pending', 'running')",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn idle_daemons(&self) -> Result<Vec<IdleDaemon>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.*, \
               (SELECT e.started_at FROM executions e WHERE e.job = j.name ORDER BY e.id DESC LIMIT 1) AS last_started, \
               (SELECT e.finished_at FROM executions e WHERE e.job = j.name ORDER BY e.id DESC LIMIT 1) AS last_finished, \
               (SELECT COUNT(*) FROM executions e WHERE e.job = j.name) AS total \
             FROM jobs j WHERE j.kind = 'daemon' AND j.paused = 0 AND j.completed_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.job = j.name \
                               AND e.status IN ('pending', 'running'))",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let total: i64 = r.try_get("total")?;
                Ok(IdleDaemon {
                    job: job_from_row(r)?,
                    last_run: (total > 0)
                        .then(|| -> Result<_, StoreError> {
                            Ok((r.try_get("last_started")?, r.try_get("last_finished")?))
                        })
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn advance_jobs(&self, steps: &[JobAdvance], now: Micros) -> Result<usize, StoreError> {
        if steps.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        // Statements per chunk, not per job: 10,000 jobs due in the same
        // second are a few statements.
        for chunk in steps.chunks(3000) {
            // 1. Advance the jobs that are still as the pass read them; the
            //    rest were advanced by another supervisor meanwhile.
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "UPDATE jobs SET next_run_at = v.column4, runs = runs + v.column5, \
                   missed = missed + v.column6, \
                   completed_at = CASE WHEN v.column7 THEN COALESCE(completed_at, ",
            );
            qb.push_bind(now)
                .push(") ELSE completed_at END, daemon_streak = COALESCE(v.column8, daemon_streak), updated_at = ")
                .push_bind(now)
                .push(" FROM (");
            qb.push_values(chunk, |mut b, s| {
                b.push_bind(&s.name)
                    .push_bind(s.expected_runs as i64)
                    .push_bind(s.expected_next)
                    .push_bind(s.next)
                    .push_bind(i64::from(s.run.is_some()))
                    .push_bind(s.missed as i64)
                    .push_bind(s.complete)
                    .push_bind(s.daemon_streak.map(|v| v as i64));
            });
            qb.push(
                ") AS v WHERE jobs.name = v.column1 AND jobs.runs = v.column2 \
                 AND jobs.next_run_at IS NOT DISTINCT FROM v.column3 RETURNING jobs.name",
            );
            let owned: std::collections::HashSet<String> = qb
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            // 2. Insert their executions; an occurrence already present (a
            //    job removed and added again) is ignored and not counted.
            let runs: Vec<&NewExecution> = chunk
                .iter()
                .filter(|s| owned.contains(&s.name))
                .filter_map(|s| s.run.as_ref())
                .collect();
            let mut ignored = Vec::new();
            for part in runs.chunks(1500) {
                let ids = insert_executions_returning(&mut tx, part, now).await?;
                inserted += ids.len();
                if ids.len() < part.len() {
                    ignored.extend(
                        part.iter()
                            .filter(|e| !ids.contains(&e.id))
                            .map(|e| e.job.clone()),
                    );
                }
            }
            for job in ignored {
                sqlx::query("UPDATE jobs SET runs = runs - 1 WHERE name = $1")
                    .bind(job)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if inserted > 0 {
            notify(&mut tx, "work").await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let rows = sqlx::query(
            "WITH names AS (SELECT name FROM queues UNION SELECT DISTINCT queue FROM executions \
                            WHERE status IN ('pending', 'running') UNION SELECT 'default') \
             SELECT n.name, q.max_running, COALESCE(q.paused, 0) AS paused, \
               (SELECT COUNT(*) FROM executions e WHERE e.status = 'pending' AND e.queue = n.name) AS pending, \
               (SELECT COUNT(*) FROM executions e WHERE e.status = 'running' AND e.queue = n.name) AS running \
             FROM names n LEFT JOIN queues q ON q.name = n.name ORDER BY n.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueueInfo {
                    name: r.try_get("name")?,
                    max_running: r
                        .try_get::<Option<i64>, _>("max_running")?
                        .map(|v| v as u32),
                    paused: r.try_get::<i64, _>("paused")? != 0,
                    pending: r.try_get::<i64, _>("pending")? as u64,
                    running: r.try_get::<i64, _>("running")? as u64,
                })
            })
            .collect()
    }

    async fn set_queue(
        &self,
        name: &str,
        max_running: Option<Option<u32>>,
        paused: Option<bool>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if let Some(limit) = max_running {
            sqlx::query("UPDATE queues SET max_running = $2 WHERE name = $1")
                .bind(name)
                .bind(limit.map(|v| v as i64))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(p) = paused {
            sqlx::query("UPDATE queues SET paused = $2 WHERE name = $1")
                .bind(name)
                .bind(p as i64)
                .execute(&mut *tx)
                .await?;
        }
        notify(&mut tx, "work").await?;
        tx.commit().await?;
        // This store's own change counts at once, not after the cache's TTL.
        self.limits_changed();
        Ok(())
    }

    async fn prune(
        &self,
        before: Micros,
        job: Option<&str>,
        except: &[String],
        limit: usize,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id FROM executions WHERE status IN ('succeeded', 'failed', 'cancelled') \
             AND finished_at < ",
        );
        qb.push_bind(before);
        match job {
            Some(j) => {
                qb.push(" AND job = ").push_bind(j.to_string());
            }
            None if !except.is_empty() => {
                qb.push(" AND job NOT IN (");
                let mut list = qb.separated(", ");
                for j in except {
                    list.push_bind(j.clone());
                }
                qb.push(")");
            }
            None => {}
        }
        qb.push(" LIMIT ").push_bind(limit.max(1) as i64);
        let ids: Vec<Uuid> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let mut deleted = [0u64; 2];
        for (i, table) in ["logs", "executions"].iter().enumerate() {
            let column = if *table == "logs" {
                "execution_id"
            } else {
                "id"
            };
            let mut qb: QueryBuilder<Postgres> =
                QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
            let mut list = qb.separated(", ");
            for id in &ids {
                list.push_bind(*id);
            }
            qb.push(")");
            deleted[i] = qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok((deleted[1], deleted[0]))
    }

    async fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT handler, status, COUNT(*) FROM executions GROUP BY handler, status ORDER BY handler, status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(h, s, n)| (h, s, n.max(0) as u64))
            .collect())
    }

    async fn declared(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query_scalar("SELECT name FROM declared WHERE kind = $1 ORDER BY name")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn set_declared(&self, kind: &str, names: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM declared WHERE kind = $1")
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        for name in names {
            sqlx::query("INSERT INTO declared (kind, name) VALUES ($1, $2)")
                .bind(kind)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stats(&self, job: Option<&str>) -> Result<Vec<JobStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT job, COUNT(*) AS total, \
               SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS succeeded, \
               SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, \
               SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled, \
               CAST(MIN(CASE WHEN finished_at IS NOT NULL AND started_at IS NOT NULL THEN finished_at - started_at END) AS DOUBLE PRECISION) AS min_us, \
               CAST(AVG(CASE WHEN finished_at IS NOT NULL AND started_at IS NOT NULL THEN finished_at - started_at END) AS DOUBLE PRECISION) AS avg_us, \
               CAST(MAX(CASE WHEN finished_at IS NOT NULL AND started_at IS NOT NULL THEN finished_at - started_at END) AS DOUBLE PRECISION) AS max_us, \
               MAX(CASE WHEN status = 'succeeded' THEN finished_at END) AS last_success, \
               MAX(CASE WHEN status = 'failed' THEN finished_at END) AS last_failure \
             FROM executions WHERE (CAST($1 AS TEXT) IS NULL OR job = $1) GROUP BY job ORDER BY job",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let name: String = r.try_get("job")?;
            let count = |c: &str| -> Result<u64, StoreError> {
                Ok(r.try_get::<Option<i64>, _>(c)?.unwrap_or(0) as u64)
            };
            let (succeeded, failed, cancelled) =
                (count("succeeded")?, count("failed")?, count("cancelled")?);
            let ms = |c: &str| -> Result<Option<f64>, StoreError> {
                Ok(r.try_get::<Option<f64>, _>(c)?.map(|us| us / 1000.0))
            };
            // p95 by rank over the durations of this job.
            let n_done: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM executions WHERE job = $1 AND finished_at IS NOT NULL AND started_at IS NOT NULL",
            )
            .bind(&name)
            .fetch_one(&self.pool)
            .await?;
            let p95_ms = if n_done > 0 {
                let rank = ((n_done as f64) * 0.95).ceil() as i64;
                let us: i64 = sqlx::query_scalar(
                    "SELECT finished_at - started_at AS d FROM executions WHERE job = $1 \
                     AND finished_at IS NOT NULL AND started_at IS NOT NULL ORDER BY d LIMIT 1 OFFSET $2",
                )
                .bind(&name)
                .bind(rank.clamp(1, n_done) - 1)
                .fetch_one(&self.pool)
                .await?;
                Some(us as f64 / 1000.0)
            } else {
                None
            };
            let last_failure: Option<Micros> = r.try_get("last_failure")?;
            let last_error: Option<String> = match last_failure {
                Some(_) => sqlx::query_scalar(
                    "SELECT error FROM executions WHERE job = $1 AND status = 'failed' ORDER BY finished_at DESC LIMIT 1",
                )
                .bind(&name)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
                None => None,
            };
            let finished = succeeded + failed + cancelled;
            out.push(JobStats {
                job: name,
                total: count("total")?,
                succeeded,
                failed,
                cancelled,
                success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
                min_ms: ms("min_us")?,
                avg_ms: ms("avg_us")?,
                p95_ms,
                max_ms: ms("max_us")?,
                last_success: r
                    .try_get::<Option<Micros>, _>("last_success")?
                    .map(format_micros),
                last_failure: last_failure.map(format_micros),
                last_error,
            });
        }
        Ok(out)
    }
}
