//! The store, written once: every statement is the same text on SQLite and
//! PostgreSQL (integers are 64-bit, flags 0/1, ids UUIDs, JSON as text), and
//! the few words that differ come from the [`Dialect`].

use super::dialect::{Col, Conn, DbRow, Dialect, Sql};
use super::{
    Batch, CancelRequest, Claimed, Claims, ExecFilter, Finished, ForeignRunning, IdTable,
    IdleDaemon, JobAdvance, JobStats, Links, LogPage, NewWorkflow, NodeInfo, Notice, QueueChange,
    QueueInfo, RetryRequest, Store, StoreError, TimelineRow, UnstartedCancel, UnstartedSink,
    WorkflowCancel, WorkflowInfo,
};
use crate::model::{
    AfterPolicy, Chain, Enqueued, Execution, HandlerSpec, Job, JobSpec, LogEntry, Micros, Mode,
    NewExecution, ProgressState, RetryPolicy, Status, Timestamp,
};
use crate::schedule::ScheduleSpec;
use async_trait::async_trait;
use jobvisor_worker::Level;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

/// Bind values per statement stay below the smaller of the two backends'
/// limits (SQLite's 32,766; PostgreSQL's 65,535).
const MAX_BINDS: usize = 30_000;

/// Rows per multi-row statement for rows of `binds` values each.
const fn rows_per_statement(binds: usize) -> usize {
    MAX_BINDS / binds
}

/// How long the "any limits?" answer is trusted: a limit set or a queue
/// paused by another process takes effect on claims within this time.
const LIMITS_TTL: Duration = Duration::from_millis(250);

/// A queue row with any limit or pause.
macro_rules! queue_limited {
    () => {
        "paused = 1 OR max_running IS NOT NULL OR key_limit IS NOT NULL OR rate_n IS NOT NULL"
    };
}

/// A job row with a cap (the predicate of the partial index jobs_capped).
macro_rules! job_capped {
    () => {
        "max_parallel IS NOT NULL OR overlap = 'queue'"
    };
}

/// Which kinds of limits exist: whether any queue is paused or limited,
/// any job capped, any queue has a key limit, any a rate. Without any,
/// claiming needs no window functions; otherwise the claim has only the
/// parts for the kinds that exist.
const ANY_LIMITS: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM queues WHERE paused = 1 OR max_running IS NOT NULL), ",
    "EXISTS (SELECT 1 FROM jobs WHERE ",
    job_capped!(),
    "), EXISTS (SELECT 1 FROM queues WHERE key_limit IS NOT NULL), ",
    "EXISTS (SELECT 1 FROM queues WHERE rate_n IS NOT NULL)"
);

/// What a claim returns of each row (the limited claim adds `queue`, for
/// the starts a rate counts).
fn claim_returning<D: Dialect>() -> String {
    format!(
        " RETURNING id, payload, {}job, handler, mode, attempt, timeout_ms, enqueued_at, \
         started_at, cancel_requested_at, after_policy, snoozes, \
         (SELECT spec FROM handlers h WHERE h.name = executions.handler){} AS facts",
        D::JSON_ARRAY.0,
        D::JSON_ARRAY.1
    )
}

/// What a claim returns of each row besides its id and payload, packed in
/// one JSON array column (see `Dialect::JSON_ARRAY`), in field order.
#[derive(serde::Deserialize)]
struct ClaimFacts {
    job: String,
    handler: String,
    mode: Mode,
    attempt: u32,
    timeout_ms: Option<u64>,
    enqueued_at: Micros,
    started_at: Micros,
    cancel_requested_at: Option<Micros>,
    after_policy: Option<String>,
    snoozes: u32,
    /// Its stored handler's spec.
    spec: Option<String>,
}

/// A claimed row, and whether it has parents (their outputs are read next).
fn decode_claim<D: Dialect>(r: &R<'_, D>) -> Result<(Claimed, bool), StoreError> {
    let Some(f) = r.json::<ClaimFacts>("facts")? else {
        return Err(corrupt("executions", "facts", "NULL"));
    };
    let claimed = Claimed {
        id: r.get("id")?,
        job: f.job,
        handler: f.handler,
        mode: f.mode,
        payload: r.json("payload")?.unwrap_or(Value::Null),
        attempt: f.attempt,
        timeout_ms: f.timeout_ms,
        enqueued_at: f.enqueued_at,
        started_at: f.started_at,
        cancel_requested: f.cancel_requested_at.is_some(),
        handler_spec: f.spec,
        inputs: Vec::new(),
        snoozes: f.snoozes,
    };
    Ok((claimed, f.after_policy.is_some()))
}

/// Starts each rate-limited queue has left in its window now (`$1`): its
/// rate less the starts that its claims recorded within the window.
const RATE_FREE: &str = "SELECT q.name, q.rate_n - CAST(COALESCE((SELECT SUM(s.n) \
     FROM queue_starts s WHERE s.queue = q.name AND s.at > $1 - q.rate_ms * 1000), 0) AS BIGINT) \
     AS rfree FROM queues q WHERE q.rate_n IS NOT NULL";

/// The kinds of limits a limited claim applies besides queue limits and
/// pauses (which it always applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Kinds {
    /// Per-job caps (`--max-parallel`, `--overlap queue`).
    jobs: bool,
    /// Per-key limits.
    keys: bool,
    /// Rates.
    rates: bool,
}

impl Kinds {
    /// The combination numbered `i` by [`Kinds::index`].
    fn from_index(i: usize) -> Kinds {
        Kinds {
            jobs: i & 1 != 0,
            keys: i & 2 != 0,
            rates: i & 4 != 0,
        }
    }

    fn index(self) -> usize {
        usize::from(self.jobs) | usize::from(self.keys) << 1 | usize::from(self.rates) << 2
    }
}

/// Best first, within the free slots of each queue, and of each job, each
/// concurrency key and each queue's rate where those kinds of limits
/// exist (`k`; each kind costs the claim, so only those are in it). The
/// candidates are the best few pending rows (index order) of queues, jobs
/// and keys that are neither paused nor full; window functions then hand
/// out the free slots among them: first per job and per key, then per
/// queue among the rows that passed (so that a row held back by its key
/// does not take a queue slot). ($1 now, $2 node, $3 limit, $4 window.)
fn claim_limited<D: Dialect>(k: Kinds) -> String {
    const ORDER: &str = "ORDER BY c.priority DESC, c.run_at, c.id";
    let mut with = vec!["busy_q AS (SELECT queue, COUNT(*) AS n FROM executions \
         WHERE status = 'running' GROUP BY queue)"
        .to_string()];
    let mut blocked_q = "blocked_q AS (SELECT q.name FROM queues q \
         LEFT JOIN busy_q b ON b.queue = q.name"
        .to_string();
    let mut blocked_when = "q.paused = 1 OR COALESCE(b.n, 0) >= q.max_running".to_string();
    let mut cand_when = "status = 'pending' AND run_at <= $1 \
         AND queue NOT IN (SELECT name FROM blocked_q)"
        .to_string();
    if k.rates {
        with.push(format!("rated_q AS ({RATE_FREE})"));
        blocked_q.push_str(" LEFT JOIN rated_q r ON r.name = q.name");
        blocked_when.push_str(" OR r.rfree <= 0");
    }
    with.push(format!("{blocked_q} WHERE {blocked_when})"));
    if k.jobs {
        with.push(
            "busy_j AS (SELECT job, COUNT(*) AS n FROM executions \
             WHERE status = 'running' GROUP BY job)"
                .into(),
        );
        with.push(format!(
            "caps_j AS (SELECT name, CASE WHEN overlap = 'queue' \
             THEN {}(COALESCE(max_parallel, 1), 1) ELSE max_parallel END AS cap FROM jobs)",
            D::LEAST
        ));
        with.push(
            "blocked_j AS (SELECT c.name FROM caps_j c JOIN busy_j b ON b.job = c.name \
             WHERE b.n >= c.cap)"
                .into(),
        );
        cand_when.push_str(" AND job NOT IN (SELECT name FROM blocked_j)");
    }
    if k.keys {
        with.push(
            "busy_k AS (SELECT queue, concurrency_key AS ckey, COUNT(*) AS n FROM executions \
             WHERE status = 'running' AND concurrency_key IS NOT NULL \
             GROUP BY queue, concurrency_key)"
                .into(),
        );
        with.push(
            "blocked_k AS (SELECT b.queue, b.ckey FROM busy_k b \
             JOIN queues q ON q.name = b.queue WHERE b.n >= q.key_limit)"
                .into(),
        );
        cand_when.push_str(
            " AND NOT EXISTS (SELECT 1 FROM blocked_k k \
             WHERE k.queue = e.queue AND k.ckey = e.concurrency_key)",
        );
    }
    with.push(format!(
        "cand AS (SELECT id, job, queue, concurrency_key AS ckey, priority, run_at \
         FROM executions e WHERE {cand_when} ORDER BY priority DESC, run_at, id LIMIT $4)"
    ));
    // Rows within their job's and key's free slots.
    let (from, within) = if k.jobs || k.keys {
        let (mut cols, mut joins, mut when) = (Vec::new(), String::new(), Vec::new());
        if k.jobs {
            cols.push(format!(
                "ROW_NUMBER() OVER (PARTITION BY c.job {ORDER}) AS jn, \
                 cj.cap - COALESCE(bj.n, 0) AS jfree"
            ));
            joins.push_str(
                " LEFT JOIN caps_j cj ON cj.name = c.job LEFT JOIN busy_j bj ON bj.job = c.job",
            );
            when.push("(r.jfree IS NULL OR r.jn <= r.jfree)");
        }
        if k.keys {
            cols.push(format!(
                "ROW_NUMBER() OVER (PARTITION BY c.queue, c.ckey {ORDER}) AS kn, \
                 CASE WHEN c.ckey IS NULL THEN NULL ELSE q.key_limit - COALESCE(bk.n, 0) END AS kfree"
            ));
            joins.push_str(
                " LEFT JOIN queues q ON q.name = c.queue \
                 LEFT JOIN busy_k bk ON bk.queue = c.queue AND bk.ckey = c.ckey",
            );
            when.push("(r.kfree IS NULL OR r.kn <= r.kfree)");
        }
        with.push(format!(
            "ranked AS (SELECT c.id, c.queue, c.priority, c.run_at, {} FROM cand c{joins})",
            cols.join(", ")
        ));
        ("ranked r", format!(" WHERE {}", when.join(" AND ")))
    } else {
        ("cand r", String::new())
    };
    let rfree = if k.rates {
        "rq.rfree"
    } else {
        "CAST(NULL AS BIGINT)"
    };
    let rate_join = if k.rates {
        " LEFT JOIN rated_q rq ON rq.name = r.queue"
    } else {
        ""
    };
    with.push(format!(
        "passing AS (SELECT r.id, r.priority, r.run_at, \
         ROW_NUMBER() OVER (PARTITION BY r.queue ORDER BY r.priority DESC, r.run_at, r.id) AS qn, \
         q.max_running - COALESCE(bq.n, 0) AS qfree, {rfree} AS rfree \
         FROM {from} LEFT JOIN queues q ON q.name = r.queue \
         LEFT JOIN busy_q bq ON bq.queue = r.queue{rate_join}{within})"
    ));
    format!(
        "UPDATE executions SET status = 'running', started_at = {}, node = $2 WHERE id IN ( \
         WITH {} SELECT id FROM passing \
         WHERE (qfree IS NULL OR qn <= qfree) AND (rfree IS NULL OR qn <= rfree) \
         ORDER BY priority DESC, run_at, id LIMIT $3){}, queue",
        D::START_STAMP,
        with.join(", "),
        claim_returning::<D>()
    )
}

/// When the next start is allowed in a rate-limited queue whose window is
/// full at `$1`: when the oldest start in that window leaves it.
const NEXT_TOKEN: &str = "SELECT MIN(s.at + q.rate_ms * 1000) FROM queue_starts s \
     JOIN queues q ON q.name = s.queue WHERE q.rate_n IS NOT NULL \
       AND s.at > $1 - q.rate_ms * 1000 \
       AND q.rate_n <= (SELECT SUM(w.n) FROM queue_starts w \
                        WHERE w.queue = q.name AND w.at > $1 - q.rate_ms * 1000)";

/// Forgets the starts that no window counts any more (and those of queues
/// that lost their rate).
const PRUNE_STARTS: &str = "DELETE FROM queue_starts WHERE at <= $1 - 1000 * COALESCE( \
     (SELECT q.rate_ms FROM queues q WHERE q.name = queue_starts.queue AND q.rate_n IS NOT NULL), 0)";

/// The claim when no limits exist: the best due rows, in index order. It
/// takes nothing while any limit exists (two cheap lookups, evaluated once
/// per statement: jobs_capped is a partial index of what they look for).
fn claim_simple<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET status = 'running', started_at = {}, node = $2 \
         WHERE id IN (SELECT id FROM executions WHERE status = 'pending' AND run_at <= $1 \
                        AND NOT EXISTS (SELECT 1 FROM queues WHERE {}) \
                        AND NOT EXISTS (SELECT 1 FROM jobs WHERE {}) \
                      ORDER BY priority DESC, run_at, id LIMIT {}($3, $4){}){}",
        D::START_STAMP,
        queue_limited!(),
        job_capped!(),
        D::LEAST,
        D::SKIP_LOCKED,
        claim_returning::<D>()
    )
}

/// An execution's last `$2` log lines, oldest first.
const LAST_LOGS: &str = "SELECT seq, ts, level, stream, message, fields FROM \
     (SELECT seq, ts, level, stream, message, fields FROM logs \
      WHERE execution_id = $1 ORDER BY seq DESC LIMIT $2) AS tail ORDER BY seq";

/// The one store, over either backend.
pub struct SqlStore<D: Dialect> {
    db: D,
    /// The cached "any limits?" answer, and when it was read; shared with
    /// the listener, which forgets it when another node changes a limit.
    limits: Arc<Mutex<CachedLimits>>,
    /// The limited claim for each [`Kinds`] combination.
    claim_limited: [String; 8],
    claim_simple: String,
    /// Which of the timeline's rows this store adds to: nodes that end
    /// executions of one handler in the same minute then write rows of
    /// their own, rather than all queueing for one row's lock.
    shard: i64,
    /// Who hears executions cancelled before they started.
    unstarted: Mutex<Vec<UnstartedSink>>,
}

/// The columns an execution is read from, but its payload and output (for
/// a query that cuts those).
const EXECUTION_COLUMNS: [&str; 38] = [
    "id",
    "job",
    "handler",
    "mode",
    "status",
    "attempt",
    "max_attempts",
    "previous_id",
    "next_id",
    "priority",
    "queue",
    "unique_key",
    "concurrency_key",
    "snoozes",
    "after_policy",
    "waiting_on",
    "workflow_id",
    "step",
    "occurrence",
    "timeout_ms",
    "enqueued_at",
    "run_at",
    "started_at",
    "finished_at",
    "node",
    "pid",
    "exit_code",
    "signal",
    "progress_percent",
    "progress_message",
    "progress_done",
    "progress_total",
    "error",
    "timed_out",
    "interrupted",
    "cancel_requested_at",
    "cancel_reason",
    "cancel_outcome",
];

impl<D: Dialect> SqlStore<D> {
    /// The WHERE clause, order and limit of a page of `id`'s log lines.
    fn log_filters(q: &mut Sql<'static, D>, id: Uuid, page: &LogPage) {
        q.push("execution_id = ")
            .push_bind(id)
            .push(" AND seq > ")
            .push_bind(page.after_seq);
        if let Some(before) = page.before_seq {
            q.push(" AND seq < ").push_bind(before);
        }
        if let Some(min) = page.min_level {
            q.push(" AND level IN (")
                .push_list(
                    Level::ALL
                        .into_iter()
                        .filter(|l| *l >= min)
                        .map(Level::as_str),
                )
                .push(")");
        }
        if let Some(text) = &page.contains {
            q.push(" AND ")
                .push(D::POSITION)
                .push("(message, ")
                .push_bind(text.clone())
                .push(") > 0");
        }
        let order = if page.from_end { "DESC" } else { "ASC" };
        q.push(" ORDER BY seq ")
            .push(order)
            .push(" LIMIT ")
            .push_bind(page.limit as i64);
    }

    /// A store over an opened backend.
    pub fn new(db: D) -> Self {
        Self {
            db,
            limits: Arc::default(),
            claim_limited: std::array::from_fn(|i| claim_limited::<D>(Kinds::from_index(i))),
            claim_simple: claim_simple::<D>(),
            shard: next_shard(),
            unstarted: Mutex::default(),
        }
    }

    /// Decodes every row with `f`.
    fn decode<T>(
        rows: &[DbRow<D>],
        table: &'static str,
        f: impl Fn(&R<'_, D>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        rows.iter().map(|row| f(&r::<D>(row, table))).collect()
    }

    async fn read_all(&self, q: Sql<'_, D>) -> Result<Vec<DbRow<D>>, StoreError> {
        q.fetch_all(&mut *self.db.reader().acquire().await?).await
    }

    async fn read_one(&self, q: Sql<'_, D>) -> Result<Option<DbRow<D>>, StoreError> {
        q.fetch_optional(&mut *self.db.reader().acquire().await?)
            .await
    }

    /// The first column of the first row.
    async fn read_scalar<T: Col>(&self, q: Sql<'_, D>) -> Result<T, StoreError> {
        let row = self.read_one(q).await?;
        Ok(D::get(row.as_ref().ok_or(sqlx::Error::RowNotFound)?, 0)?)
    }

    async fn write(&self, q: Sql<'_, D>) -> Result<u64, StoreError> {
        q.execute(&mut *self.db.writer().acquire().await?).await
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, D::Db>, StoreError> {
        Ok(self.db.writer().begin_with(D::BEGIN).await?)
    }

    /// Adds what `tx` ended to the timeline, last, and commits.
    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'static, D::Db>,
        mut ends: Ends,
    ) -> Result<(), StoreError> {
        let unstarted = std::mem::take(&mut ends.unstarted);
        ends.write::<D>(&mut tx, self.shard).await?;
        tx.commit().await?;
        if !unstarted.is_empty() {
            let mut sinks = self.unstarted.lock().unwrap_or_else(|e| e.into_inner());
            sinks.retain(|hear| hear(&unstarted));
        }
        Ok(())
    }

    /// Forgets the cached "any limits?" answer, after this store changed
    /// queues or jobs: its own change counts at once, not after the TTL.
    fn limits_changed(&self) {
        forget(&self.limits);
    }

    /// Whether limits may exist, from the cache alone (no query).
    fn limits_may_exist(&self) -> bool {
        let cached = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        cached.limits.any
    }

    async fn any_limits(&self) -> Result<Limits, StoreError> {
        let cached = *self.limits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cached.read_at {
            if at.elapsed() < LIMITS_TTL {
                return Ok(cached.limits);
            }
        }
        let limits = read_limits::<D>(&mut *self.db.reader().acquire().await?).await?;
        self.cache_limits(limits);
        Ok(limits)
    }

    fn cache_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = CachedLimits {
            read_at: Some(Instant::now()),
            limits,
        };
    }

    /// The ends and outputs of the parents of each of `ids`, in the order
    /// of the parents' ids.
    async fn inputs(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<jobvisor_worker::Input>>, StoreError> {
        let mut out: HashMap<Uuid, Vec<jobvisor_worker::Input>> = HashMap::new();
        for chunk in ids.chunks(rows_per_statement(1)) {
            let mut q = Sql::new(
                "SELECT d.child_id AS child, e.id, e.handler, e.status, e.output \
                 FROM dependencies d JOIN executions e ON e.id = d.parent_id \
                 WHERE d.child_id IN (",
            );
            q.push_list(chunk.iter().copied())
                .push(") ORDER BY d.child_id, e.id");
            for row in self.read_all(q).await? {
                let row = r::<D>(&row, "executions");
                out.entry(row.get("child")?)
                    .or_default()
                    .push(jobvisor_worker::Input {
                        id: row.get::<Uuid>("id")?.to_string(),
                        handler: row.get("handler")?,
                        status: row.get("status")?,
                        output: row.json("output")?.unwrap_or(Value::Null),
                    });
            }
        }
        Ok(out)
    }

    /// A job was added, changed or removed: other nodes' schedulers look.
    async fn jobs_changed(&self) -> Result<(), StoreError> {
        self.limits_changed();
        Ok(D::notify(&mut *self.db.writer().acquire().await?, "jobs").await?)
    }
}

/// Reads which kinds of limits exist now.
async fn read_limits<D: Dialect>(conn: &mut Conn<D>) -> Result<Limits, StoreError> {
    let row = Sql::<D>::new(ANY_LIMITS)
        .fetch_optional(conn)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let queues: bool = D::get(&row, 0)?;
    let kinds = Kinds {
        jobs: D::get(&row, 1)?,
        keys: D::get(&row, 2)?,
        rates: D::get(&row, 3)?,
    };
    Ok(Limits {
        any: queues || kinds != Kinds::default(),
        kinds,
    })
}

/// What kinds of limits exist, so that claims pay only for those.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Any queue limit, paused queue, key limit, rate or per-job cap.
    any: bool,
    /// Which of those the claim must apply besides queue limits.
    kinds: Kinds,
}

/// [`Limits`] as last read (never read: assume every kind).
#[derive(Clone, Copy, Debug)]
struct CachedLimits {
    read_at: Option<Instant>,
    limits: Limits,
}

impl Default for CachedLimits {
    fn default() -> Self {
        Self {
            read_at: None,
            limits: Limits {
                any: true,
                kinds: Kinds {
                    jobs: true,
                    keys: true,
                    rates: true,
                },
            },
        }
    }
}

fn forget(limits: &Mutex<CachedLimits>) {
    *limits.lock().unwrap_or_else(|e| e.into_inner()) = CachedLimits::default();
}

/// A row, decoded by column name, with errors that name the column.
struct R<'a, D: Dialect> {
    row: &'a DbRow<D>,
    table: &'static str,
}

fn r<'a, D: Dialect>(row: &'a DbRow<D>, table: &'static str) -> R<'a, D> {
    R { row, table }
}

/// A stored value that does not decode.
fn corrupt(
    table: &str,
    column: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Corrupt {
        what: format!("{table}.{column}"),
        source: source.into(),
    }
}

impl<D: Dialect> R<'_, D> {
    fn get<T: Col>(&self, column: &str) -> Result<T, StoreError> {
        Ok(D::get(self.row, column)?)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.get(column)
    }

    fn opt_u64(&self, column: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.get::<Option<i64>>(column)?.map(|v| v.max(0) as u64))
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.int(column)? != 0)
    }

    fn parse<T: FromStr>(&self, column: &str) -> Result<T, StoreError>
    where
        T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let text: String = self.get(column)?;
        text.parse().map_err(|e| corrupt(self.table, column, e))
    }

    fn opt_parse<T: FromStr>(&self, column: &str) -> Result<Option<T>, StoreError>
    where
        T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let text: Option<String> = self.get(column)?;
        text.map(|t| t.parse().map_err(|e| corrupt(self.table, column, e)))
            .transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.get(column)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(self.table, column, e)))
            .transpose()
    }

    /// JSON column `column`; of a row read with it cut (`clipped`: it has
    /// `{column}_truncated`), a cut one is its text, as a string.
    fn clipped_json(
        &self,
        column: &str,
        clipped: bool,
    ) -> Result<(Option<Value>, bool), StoreError> {
        if clipped && self.flag(&format!("{column}_truncated"))? {
            let text: Option<String> = self.get(column)?;
            return Ok((text.map(Value::String), true));
        }
        Ok((self.json(column)?, false))
    }

    fn execution(&self) -> Result<Execution, StoreError> {
        self.execution_read(false)
    }

    /// An execution read with its payload and output cut
    /// (`ExecFilter::clip`).
    fn execution_clipped(&self) -> Result<Execution, StoreError> {
        self.execution_read(true)
    }

    fn execution_read(&self, clipped: bool) -> Result<Execution, StoreError> {
        let started_at: Option<Micros> = self.get("started_at")?;
        let finished_at: Option<Micros> = self.get("finished_at")?;
        let (payload, payload_truncated) = self.clipped_json("payload", clipped)?;
        let (output, output_truncated) = self.clipped_json("output", clipped)?;
        Ok(Execution {
            id: self.get("id")?,
            job: Some(self.get::<String>("job")?).filter(|j| !j.is_empty()),
            handler: self.get("handler")?,
            mode: self.parse("mode")?,
            status: self.parse("status")?,
            attempt: self.int("attempt")? as u32,
            max_attempts: self.int("max_attempts")? as u32,
            previous_id: self.get("previous_id")?,
            next_id: self.get("next_id")?,
            payload: payload.unwrap_or(Value::Null),
            payload_truncated,
            priority: self.int("priority")? as i32,
            queue: self.get("queue")?,
            unique_key: self.get("unique_key")?,
            concurrency_key: self.get("concurrency_key")?,
            snoozes: self.int("snoozes")?.max(0) as u32,
            after_policy: self.opt_parse("after_policy")?,
            waiting_on: self.int("waiting_on")?.max(0) as u64,
            workflow_id: self.get("workflow_id")?,
            step: self.get("step")?,
            occurrence: self.get("occurrence")?,
            timeout_ms: self.opt_u64("timeout_ms")?,
            enqueued_at: Timestamp(self.get("enqueued_at")?),
            run_at: Timestamp(self.get("run_at")?),
            started_at: started_at.map(Timestamp),
            finished_at: finished_at.map(Timestamp),
            node: self.get("node")?,
            pid: self.get("pid")?,
            exit_code: self.get("exit_code")?,
            signal: self.get("signal")?,
            progress: ProgressState {
                percent: self.get("progress_percent")?,
                message: self.get("progress_message")?,
                done: self.get("progress_done")?,
                total: self.get("progress_total")?,
            },
            output,
            output_truncated,
            error: self.get("error")?,
            timed_out: self.flag("timed_out")?,
            interrupted: self.flag("interrupted")?,
            cancel_requested_at: self
                .get::<Option<Micros>>("cancel_requested_at")?
                .map(Timestamp),
            cancel_reason: self.get("cancel_reason")?,
            cancel_outcome: self.get("cancel_outcome")?,
            duration_ms: match (started_at, finished_at) {
                (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
                _ => None,
            },
        })
    }

    /// The node in columns `{prefix}id`, ... (none if `{prefix}id` is null).
    fn node(&self, prefix: &str) -> Result<Option<NodeInfo>, StoreError> {
        let col = |c: &str| format!("{prefix}{c}");
        let Some(id) = self.get::<Option<String>>(&col("id"))? else {
            return Ok(None);
        };
        Ok(Some(NodeInfo {
            id,
            hostname: self.get(&col("hostname"))?,
            pid: self.get(&col("pid"))?,
            started_at: self.get(&col("started_at"))?,
            heartbeat_at: self.get(&col("heartbeat_at"))?,
            stopped_at: self.get(&col("stopped_at"))?,
        }))
    }

    fn job(&self) -> Result<Job, StoreError> {
        Ok(Job {
            spec: JobSpec {
                name: self.get("name")?,
                handler: self.get("handler")?,
                mode: self.opt_parse("mode")?,
                payload: self.json("payload")?.unwrap_or(Value::Null),
                schedule: self
                    .json::<ScheduleSpec>("schedule")?
                    .ok_or_else(|| corrupt(self.table, "schedule", "null"))?,
                priority: self.int("priority")? as i32,
                queue: self.get("queue")?,
                retries: self.int("retries")? as u32,
                backoff_ms: self.int("backoff_ms")? as u64,
                timeout_ms: self.opt_u64("timeout_ms")?,
                overlap: self.parse("overlap")?,
                misfire: self.parse("misfire")?,
                max_parallel: self.opt_u64("max_parallel")?.map(|v| v as u32),
                max_runs: self.opt_u64("max_runs")?,
                start_at: self.get("start_at")?,
                end_at: self.get("end_at")?,
                paused: self.flag("paused")?,
                then: self.json("chain")?.unwrap_or_default(),
                concurrency_key: self.get("concurrency_key")?,
            },
            runs: self.int("runs")? as u64,
            missed: self.int("missed")? as u64,
            next_run_at: self.get("next_run_at")?,
            completed_at: self.get("completed_at")?,
            daemon_streak: self.int("daemon_streak")? as u32,
        })
    }

    fn log(&self) -> Result<LogEntry, StoreError> {
        Ok(LogEntry {
            seq: self.get("seq")?,
            ts: Timestamp(self.get("ts")?),
            level: self.parse("level")?,
            stream: self.get("stream")?,
            message: self.get("message")?,
            fields: match self.json("fields")? {
                Some(Value::Object(m)) => Some(m),
                _ => None,
            },
        })
    }
}

/// Appends `filter`'s conditions (` AND ...`) to a query over
/// `executions`.
fn push_filter<'a, D: Dialect>(q: &mut Sql<'a, D>, filter: &'a ExecFilter) {
    let pending = pending_by_queue(filter);
    if !filter.statuses.is_empty() {
        // Statuses are written as literals, which lets the planners use the
        // partial index of each (`WHERE status = 'failed'`); they are our
        // own names, never user text. A status matches many rows: with a
        // filter on a column that is more selective, `status || ''` keeps
        // SQLite's planner (which has no statistics) on that column's index.
        let narrower = filter.job.is_some()
            || filter.queue.is_some()
            || filter.handler.is_some()
            || filter.unique_key.is_some()
            || filter.concurrency_key.is_some();
        let column = if narrower && !pending {
            "status || ''"
        } else {
            "status"
        };
        let names: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let condition = match names.as_slice() {
            [one] => format!("{column} = {one}"),
            many => format!("{column} IN ({})", many.join(", ")),
        };
        let active = filter
            .statuses
            .iter()
            .all(|s| matches!(s, Status::Pending | Status::Running | Status::Waiting));
        if pending {
            // Pending rows newest first, their queue read off the index.
            q.push(" AND ").push(&condition);
        } else if active && !narrower {
            // Few rows are active, in partial indexes that are not in id
            // order: collect them there instead of walking the history.
            q.push(" AND id IN (SELECT id FROM executions WHERE ")
                .push(&condition)
                .push(")");
        } else {
            q.push(" AND ").push(&condition);
        }
    }
    // On the pending rows' index the queue is checked there, not looked up
    // on the queue's own index (which walks its whole history).
    let queue = if pending { "queue || ''" } else { "queue" };
    for (column, value) in [
        ("handler", &filter.handler),
        ("job", &filter.job),
        (queue, &filter.queue),
        ("node", &filter.node),
        ("unique_key", &filter.unique_key),
        ("concurrency_key", &filter.concurrency_key),
    ] {
        if let Some(v) = value {
            q.push(" AND ")
                .push(column)
                .push(" = ")
                .push_bind(v.as_str());
        }
    }
    if let Some(t) = filter.since {
        q.push(" AND enqueued_at >= ").push_bind(t);
    }
    if let Some(t) = filter.until {
        q.push(" AND enqueued_at < ").push_bind(t);
    }
    if let Some(id) = filter.before {
        q.push(" AND id < ").push_bind(id);
    }
}

/// Whether `filter` asks for pending executions, of all queues or one, and
/// nothing narrower: `executions_pending_id` answers it in id order.
fn pending_by_queue(filter: &ExecFilter) -> bool {
    filter.statuses == [Status::Pending]
        && filter.job.is_none()
        && filter.handler.is_none()
        && filter.unique_key.is_none()
        && filter.concurrency_key.is_none()
        && filter.node.is_none()
}

/// How an execution is inserted.
#[derive(Clone, Copy)]
struct Start {
    status: Status,
    /// Parents it waits on.
    waiting_on: i64,
    /// Whether executions in the same enqueue run after it.
    has_children: bool,
}

impl Start {
    const PENDING: Start = Start {
        status: Status::Pending,
        waiting_on: 0,
        has_children: false,
    };

    fn new(status: Status, waiting_on: i64) -> Self {
        Start {
            status,
            waiting_on,
            has_children: false,
        }
    }
}

/// Pending, waiting on nothing.
fn pending(_: &NewExecution) -> Start {
    Start::PENDING
}

/// The INSERT of `execs`, each as `start` says; an existing (job,
/// occurrence) is passed over.
fn execution_insert<'a, D: Dialect>(
    execs: impl IntoIterator<Item = &'a NewExecution>,
    now: Micros,
    start: &impl Fn(&NewExecution) -> Start,
) -> Sql<'a, D> {
    let mut q = Sql::new(
        "INSERT INTO executions (id, job, handler, mode, payload, status, attempt, \
         max_attempts, backoff_base_ms, backoff_cap_ms, previous_id, timeout_ms, priority, \
         enqueued_at, run_at, queue, occurrence, unique_key, unique_for_ms, waiting_on, \
         after_policy, workflow_id, step, has_children, concurrency_key) ",
    );
    q.values(execs, |t, e| {
        let Start {
            status,
            waiting_on,
            has_children,
        } = start(e);
        t.bind(e.id)
            .bind(e.job.as_deref().unwrap_or(""))
            .bind(e.handler.as_str())
            .bind(e.mode.as_str())
            .bind(e.payload.to_string())
            .bind(status.as_str())
            .bind(e.attempt as i64)
            .bind(e.retry.max_attempts as i64)
            .bind(e.retry.backoff_base_ms as i64)
            .bind(e.retry.backoff_cap_ms as i64)
            .bind(e.previous_id)
            .bind(e.timeout_ms.map(|t| t as i64))
            .bind(e.priority as i64)
            .bind(now)
            .bind(e.run_at)
            .bind(e.queue.as_str())
            .bind(e.occurrence)
            .bind(e.unique.as_ref().map(|u| u.key.as_str()))
            .bind(
                e.unique
                    .as_ref()
                    .and_then(|u| u.hold_ms)
                    .map(|ms| ms as i64),
            )
            .bind(waiting_on)
            .bind((!e.after.is_empty()).then(|| e.after_policy.as_str()))
            .bind(e.step.as_ref().map(|(w, _)| *w))
            .bind(e.step.as_ref().map(|(_, s)| s.as_str()))
            .bind(has_children as i64)
            .bind(e.concurrency_key.as_deref());
    });
    q.push(" ON CONFLICT DO NOTHING");
    q
}

const EXECUTION_BINDS: usize = 25;

/// Inserts executions, each as `start` says; returns the ids actually
/// inserted.
async fn insert_executions<D: Dialect>(
    conn: &mut Conn<D>,
    execs: &[&NewExecution],
    now: Micros,
    start: impl Fn(&NewExecution) -> Start,
) -> Result<HashSet<Uuid>, StoreError> {
    let mut inserted = HashSet::with_capacity(execs.len());
    for chunk in execs.chunks(rows_per_statement(EXECUTION_BINDS)) {
        // Counted rather than returned: rows coming back cost a hand-off
        // each (SQLite's connection thread). Only when some were passed
        // over (a conflict) are the inserted ones read back.
        let n = execution_insert::<D>(chunk.iter().copied(), now, &start)
            .execute(&mut *conn)
            .await?;
        if n as usize == chunk.len() {
            inserted.extend(chunk.iter().map(|e| e.id));
            continue;
        }
        let mut q = Sql::<D>::new("SELECT id FROM executions WHERE id IN (");
        q.push_list(chunk.iter().map(|e| e.id)).push(")");
        for row in q.fetch_all(&mut *conn).await? {
            inserted.insert(D::get(&row, 0)?);
        }
    }
    Ok(inserted)
}

/// Records that each `(child, parent)` runs after the other.
async fn insert_edges<D: Dialect>(
    conn: &mut Conn<D>,
    edges: &[(Uuid, Uuid)],
) -> Result<(), StoreError> {
    for chunk in edges.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new("INSERT INTO dependencies (child_id, parent_id) ");
        q.values(chunk, |t, (child, parent)| {
            t.bind(*child).bind(*parent);
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Where parent `id` stands for a dependent being enqueued: the attempt
/// that counts (following its retries) and its status, read under a row
/// lock so that its end cannot be recorded before the dependent's edge is
/// there to see. One that has not ended is marked as having children,
/// under the same lock: the completion that ends it reads the mark from
/// the row it updates, so it looks for children whenever one was added.
/// `None`: no such execution.
async fn parent_state<D: Dialect>(
    conn: &mut Conn<D>,
    mut id: Uuid,
) -> Result<Option<(Uuid, Status)>, StoreError> {
    loop {
        let q = Sql::<D>::new(format!(
            "SELECT status, next_id FROM executions WHERE id = $1{}",
            D::FOR_UPDATE
        ));
        let Some(row) = q.bind(id).fetch_optional(&mut *conn).await? else {
            return Ok(None);
        };
        let row = r::<D>(&row, "executions");
        let status: Status = row.parse("status")?;
        match row.get::<Option<Uuid>>("next_id")? {
            Some(next) if status.is_terminal() => id = next,
            _ => {
                if !status.is_terminal() {
                    Sql::<D>::new("UPDATE executions SET has_children = 1 WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                }
                return Ok(Some((id, status)));
            }
        }
    }
}

/// Enqueues `execs` within transaction `tx` (see [`Store::enqueue`]).
async fn enqueue_in<D: Dialect>(
    tx: &mut Conn<D>,
    ends: &mut Ends,
    execs: &[NewExecution],
    now: Micros,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut out: Vec<Enqueued> = execs
        .iter()
        .map(|e| Enqueued {
            id: e.id,
            duplicate: false,
            replaced: false,
        })
        .collect();
    let (insert, successors) = take_keys::<D>(tx, execs, &mut out, now).await?;
    // Parents: in this batch (as inserted, or the holder a duplicate
    // named), or already stored. A batch without any (the common case)
    // skips the bookkeeping.
    let mut starts: HashMap<Uuid, Start> = HashMap::new();
    let mut edges = Vec::new();
    let mut upstream = Vec::new();
    if insert.iter().any(|e| !e.after.is_empty()) {
        let named: HashMap<Uuid, Uuid> =
            execs.iter().zip(&out).map(|(e, o)| (e.id, o.id)).collect();
        let inserting: HashSet<Uuid> = insert.iter().map(|e| e.id).collect();
        for e in &insert {
            if successors.contains(&e.id) {
                starts.insert(e.id, Start::new(Status::Waiting, 0));
                continue;
            }
            if e.after.is_empty() {
                starts.insert(e.id, Start::PENDING);
                continue;
            }
            let mut parents = BTreeSet::new();
            let (mut waiting, mut failed) = (0, None);
            for p in &e.after {
                let p = named.get(p).copied().unwrap_or(*p);
                let (p, status) = match starts.get_mut(&p) {
                    Some(parent) => {
                        parent.has_children = true;
                        (p, parent.status)
                    }
                    // Later in the batch (or itself): not known yet.
                    None if inserting.contains(&p) => return Err(StoreError::NoParent(p)),
                    None => parent_state::<D>(tx, p)
                        .await?
                        .ok_or(StoreError::NoParent(p))?,
                };
                if !parents.insert(p) {
                    continue;
                }
                if !status.is_terminal() {
                    waiting += 1;
                } else if status != Status::Succeeded && failed.is_none() {
                    failed = Some(p);
                }
            }
            edges.extend(parents.iter().map(|p| (e.id, *p)));
            let start = match failed {
                Some(p) if e.after_policy == AfterPolicy::Success => {
                    upstream.push((e.id, format!("upstream {p} failed")));
                    Start::new(Status::Cancelled, 0)
                }
                _ if waiting > 0 => Start::new(Status::Waiting, waiting),
                _ => Start::PENDING,
            };
            starts.insert(e.id, start);
        }
    }
    insert_executions::<D>(tx, &insert, now, |e| match starts.get(&e.id) {
        // Cancelled ones go in waiting, to be cancelled as any other.
        Some(s) if s.status == Status::Cancelled => Start {
            status: Status::Waiting,
            ..*s
        },
        Some(start) => *start,
        None if successors.contains(&e.id) => Start::new(Status::Waiting, 0),
        None => Start::PENDING,
    })
    .await?;
    insert_edges::<D>(tx, &edges).await?;
    // Runs cancelled as they are inserted are not told to the sinks: the
    // caller announces their `enqueued` first (see `Client::submit_many`).
    let told = ends.unstarted.len();
    cancel_unstarted::<D>(tx, ends, &upstream, None, now).await?;
    ends.unstarted.truncate(told);
    D::notify(tx, "work").await?;
    Ok(out)
}

/// The unique keys of a batch: a run whose key another execution holds is
/// a duplicate of the holder (`out` says so), or with `replace` takes its
/// place. Returns the runs to insert, and those inserted as the successor
/// of a holder that runs (they wait for it).
async fn take_keys<'a, D: Dialect>(
    tx: &mut Conn<D>,
    execs: &'a [NewExecution],
    out: &mut [Enqueued],
    now: Micros,
) -> Result<(Vec<&'a NewExecution>, HashSet<Uuid>), StoreError> {
    let mut insert = Vec::with_capacity(execs.len());
    let mut successors = HashSet::new();
    for (e, entry) in execs.iter().zip(out.iter_mut()) {
        let Some(u) = &e.unique else {
            insert.push(e);
            continue;
        };
        let Some(holder) = take_key::<D>(tx, &u.key, e.id, now).await? else {
            insert.push(e);
            continue;
        };
        *entry = Enqueued {
            id: holder,
            duplicate: true,
            replaced: false,
        };
        if u.replace {
            match replace::<D>(tx, &u.key, holder, e).await? {
                Replaced::Execution(id) => {
                    entry.id = id;
                    entry.replaced = true;
                }
                Replaced::Follow => {
                    *entry = Enqueued {
                        id: e.id,
                        duplicate: false,
                        replaced: false,
                    };
                    insert.push(e);
                    successors.insert(e.id);
                }
                Replaced::Nothing => {}
            }
        }
    }
    Ok((insert, successors))
}

/// Executions that ended in one transaction, per minute, handler and
/// status: the rows the timeline gains, written by [`Ends::write`] last,
/// just before the commit, in key order (so that two transactions adding to
/// the same rows take their locks in one order and never deadlock).
/// Also the executions it cancelled before they started, told to the
/// store's [`UnstartedSink`]s after the commit.
#[derive(Default)]
struct Ends {
    minutes: BTreeMap<(i64, String, Status), Minute>,
    unstarted: Vec<UnstartedCancel>,
}

/// What ended in one minute, of one handler, with one status.
#[derive(Default, Clone, Copy)]
struct Minute {
    n: i64,
    /// How many of them had started, and their durations (µs).
    timed: i64,
    sum_us: i64,
    max_us: i64,
}

impl Ends {
    /// One execution of `handler` that ended at `finished` with `status`.
    fn add(&mut self, handler: String, status: Status, started: Option<Micros>, finished: Micros) {
        let m = self
            .minutes
            .entry((finished.div_euclid(MINUTE_US), handler, status))
            .or_default();
        m.n += 1;
        if let Some(started) = started {
            let us = finished.saturating_sub(started).max(0);
            m.timed += 1;
            m.sum_us = m.sum_us.saturating_add(us);
            m.max_us = m.max_us.max(us);
        }
    }

    /// Adds them to the timeline, in this store's `shard` of its rows.
    async fn write<D: Dialect>(self, conn: &mut Conn<D>, shard: i64) -> Result<(), StoreError> {
        let rows: Vec<_> = self.minutes.into_iter().collect();
        for chunk in rows.chunks(rows_per_statement(8)) {
            let mut q = Sql::<D>::new(
                "INSERT INTO timeline (minute, handler, status, shard, n, timed, sum_us, max_us) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                   v.column7, v.column8 FROM (",
            );
            q.values(chunk, |t, ((minute, handler, status), m)| {
                t.bind(*minute)
                    .bind(handler.as_str())
                    .bind(status.as_str())
                    .bind(shard)
                    .bind(m.n)
                    .bind(m.timed)
                    .bind(m.sum_us)
                    .bind(m.max_us);
            });
            // `WHERE true`: SQLite would read `ON` as a join's otherwise.
            q.push(
                ") AS v WHERE true ON CONFLICT (minute, handler, status, shard) DO UPDATE SET \
                 n = timeline.n + excluded.n, timed = timeline.timed + excluded.timed, \
                 sum_us = timeline.sum_us + excluded.sum_us, max_us = ",
            )
            .push(D::GREATEST)
            .push("(timeline.max_us, excluded.max_us)");
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// A minute, µs.
const MINUTE_US: i64 = 60_000_000;

/// Shards of the timeline's rows.
const SHARDS: i64 = 64;

/// A shard for a new store: distinct for stores of one process, and spread
/// by process id across nodes (a clash only shares rows, and their locks).
fn next_shard() -> i64 {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (i64::from(std::process::id()).wrapping_mul(7) + n).rem_euclid(SHARDS)
}

/// Cancels executions that have not started (pending or waiting), each
/// with its error, and with `reason` (or else that error) as the cancel's
/// reason; returns those it cancelled. Their unique keys are handed on or
/// given up. Their dependents are left to [`settle`].
async fn cancel_unstarted<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut Ends,
    items: &[(Uuid, String)],
    reason: Option<&str>,
    now: Micros,
) -> Result<Vec<Uuid>, StoreError> {
    let mut cancelled = Vec::with_capacity(items.len());
    for chunk in items.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new("UPDATE executions SET status = 'cancelled', finished_at = ");
        q.push_bind(now)
            .push(", cancel_requested_at = COALESCE(cancel_requested_at, ")
            .push_bind(now)
            .push("), cancel_reason = COALESCE(")
            .push_bind(reason)
            .push(", v.column2), cancel_outcome = 'before-start', error = v.column2 FROM (");
        q.values(chunk, |t, (id, error)| {
            t.bind(*id).bind(error.as_str());
        });
        q.push(
            ") AS v WHERE executions.id = v.column1 AND executions.status IN ('pending', 'waiting') \
             RETURNING executions.id AS id, executions.unique_key AS unique_key, \
             executions.unique_for_ms AS hold, executions.handler AS handler, \
             executions.started_at AS started_at, executions.job AS job, \
             executions.cancel_reason AS reason",
        );
        for row in q.fetch_all(&mut *conn).await? {
            let row = r::<D>(&row, "executions");
            let id: Uuid = row.get("id")?;
            let handler: String = row.get("handler")?;
            ends.add(
                handler.clone(),
                Status::Cancelled,
                row.get("started_at")?,
                now,
            );
            ends.unstarted.push(UnstartedCancel {
                id,
                handler,
                job: row.get("job")?,
                reason: row.get::<Option<String>>("reason")?.unwrap_or_default(),
            });
            if let Some(key) = row.get::<Option<String>>("unique_key")? {
                // A follower gives up its place; a holder hands the key on.
                Sql::<D>::new(
                    "UPDATE unique_keys SET next_id = NULL WHERE key = $1 AND next_id = $2",
                )
                .bind(key.as_str())
                .bind(id)
                .execute(&mut *conn)
                .await?;
                let next = key_next(None, row.get("hold")?, now);
                release_key::<D>(conn, &key, id, next).await?;
            }
            cancelled.push(id);
        }
    }
    Ok(cancelled)
}

/// Cancels `ids` that have not ended: pending and waiting ones at once
/// (their dependents settled), running ones flagged for their nodes.
async fn cancel_ids<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut Ends,
    ids: &[Uuid],
    reason: &str,
    now: Micros,
) -> Result<WorkflowCancel, StoreError> {
    let unstarted: Vec<(Uuid, String)> = ids
        .iter()
        .map(|id| (*id, "cancelled before it started".to_string()))
        .collect();
    let cancelled = cancel_unstarted::<D>(conn, ends, &unstarted, Some(reason), now).await?;
    let mut requested = 0;
    for chunk in ids.chunks(rows_per_statement(1)) {
        let mut q = Sql::<D>::new(
            "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, ",
        );
        q.push_bind(now)
            .push("), cancel_reason = COALESCE(cancel_reason, ")
            .push_bind(reason)
            .push(") WHERE status = 'running' AND id IN (")
            .push_list(chunk.iter().copied())
            .push(")");
        requested += q.execute(&mut *conn).await?;
    }
    if requested > 0 {
        D::notify(conn, "cancel").await?;
    }
    // Executions outside those may run after them.
    let ended = cancelled
        .iter()
        .map(|id| (*id, Status::Cancelled))
        .collect();
    settle::<D>(conn, ends, ended, now).await?;
    Ok(WorkflowCancel {
        cancelled: cancelled.len() as u64,
        requested,
    })
}

/// Executions ended for good (`ended`, with their statuses): each waiting
/// child counts them off and becomes pending when none is left, or, if
/// its policy asks for success and one did not succeed, is cancelled with
/// `upstream ID failed`, which ends it in turn for its own children. Runs
/// in the transaction that records the ends, so a child becomes ready
/// exactly once, whichever node ended its last parent. Returns whether any
/// became ready.
async fn settle<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut Ends,
    mut ended: Vec<(Uuid, Status)>,
    now: Micros,
) -> Result<bool, StoreError> {
    let mut woke = false;
    while !ended.is_empty() {
        let status_of: HashMap<Uuid, Status> = ended.iter().copied().collect();
        // child -> (parents ended now, the first that did not succeed, policy)
        let mut children: BTreeMap<Uuid, (i64, Option<Uuid>, AfterPolicy)> = BTreeMap::new();
        // Read and, on PostgreSQL, lock the waiting children in id order,
        // so that two nodes settling shared children never deadlock; after
        // a wait for a lock, a child no longer waiting drops out.
        for chunk in ended.chunks(rows_per_statement(1)) {
            let mut q = Sql::<D>::new(
                "SELECT d.child_id AS child, d.parent_id AS parent, e.after_policy AS policy \
                 FROM dependencies d JOIN executions e ON e.id = d.child_id \
                 WHERE e.status = 'waiting' AND d.parent_id IN (",
            );
            q.push_list(chunk.iter().map(|(id, _)| *id))
                .push(") ORDER BY e.id")
                .push(D::FOR_UPDATE);
            for row in q.fetch_all(&mut *conn).await? {
                let row = r::<D>(&row, "dependencies");
                let parent: Uuid = row.get("parent")?;
                let policy = row.opt_parse("policy")?.unwrap_or_default();
                let entry = children
                    .entry(row.get("child")?)
                    .or_insert((0, None, policy));
                entry.0 += 1;
                if status_of.get(&parent) != Some(&Status::Succeeded) && entry.1.is_none() {
                    entry.1 = Some(parent);
                }
            }
        }
        if children.is_empty() {
            break;
        }
        let (mut cancel, mut count) = (Vec::new(), Vec::new());
        for (child, (n, failed, policy)) in children {
            match failed {
                Some(p) if policy == AfterPolicy::Success => {
                    cancel.push((child, format!("upstream {p} failed")))
                }
                _ => count.push((child, n)),
            }
        }
        for chunk in count.chunks(rows_per_statement(2)) {
            let mut q = Sql::<D>::new(
                "UPDATE executions SET waiting_on = waiting_on - v.column2, \
                 status = CASE WHEN waiting_on - v.column2 <= 0 THEN 'pending' ELSE status END \
                 FROM (",
            );
            q.values(chunk, |t, (id, n)| {
                t.bind(*id).bind(*n);
            });
            q.push(
                ") AS v WHERE executions.id = v.column1 AND executions.status = 'waiting' \
                 RETURNING executions.status AS status",
            );
            for row in q.fetch_all(&mut *conn).await? {
                woke |= D::get::<String>(&row, 0)? == "pending";
            }
        }
        ended = cancel_unstarted::<D>(conn, ends, &cancel, None, now)
            .await?
            .into_iter()
            .map(|id| (id, Status::Cancelled))
            .collect();
    }
    if woke {
        D::notify(conn, "work").await?;
    }
    Ok(woke)
}

#[async_trait]
impl<D: Dialect> Store for SqlStore<D> {
    async fn listen(&self) -> Result<Option<UnboundedReceiver<Notice>>, StoreError> {
        let Some(mut notices) = self.db.listen().await? else {
            return Ok(None);
        };
        // Another node changed a limit: the next claim here reads limits
        // anew instead of trusting the cache for up to its TTL.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = self.limits.clone();
        tokio::spawn(async move {
            loop {
                // Ends when nobody listens any more, not at the next notice.
                let n = tokio::select! {
                    n = notices.recv() => match n { Some(n) => n, None => break },
                    _ = tx.closed() => break,
                };
                let n = match n {
                    Notice::Limits => {
                        forget(&limits);
                        Notice::Work
                    }
                    // Another process (SQLite) may have changed a limit.
                    Notice::Jobs | Notice::Changed => {
                        forget(&limits);
                        n
                    }
                    n => n,
                };
                if tx.send(n).is_err() {
                    break;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    fn publishes_events(&self) -> bool {
        D::PUBLISHES_EVENTS
    }

    async fn publish_events(&self, payload: &str) -> Result<(), StoreError> {
        Ok(self.db.publish_events(payload).await?)
    }

    async fn events_heard(&self) -> Result<bool, StoreError> {
        Ok(self.db.events_heard().await?)
    }

    async fn listen_events(&self) -> Result<Option<UnboundedReceiver<String>>, StoreError> {
        Ok(self.db.listen_events().await?)
    }

    fn on_unstarted_cancels(&self, sink: UnstartedSink) {
        let mut sinks = self.unstarted.lock().unwrap_or_else(|e| e.into_inner());
        sinks.push(sink);
    }

    async fn put_handler(&self, spec: &HandlerSpec, now: Micros) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).expect("handler specs serialize");
        self.write(
            Sql::new(
                "INSERT INTO handlers (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
            )
            .bind(spec.name.as_str())
            .bind(json)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    async fn handler(&self, name: &str) -> Result<Option<HandlerSpec>, StoreError> {
        let row = self
            .read_one(Sql::new("SELECT spec FROM handlers WHERE name = $1").bind(name))
            .await?;
        Ok(match row {
            Some(row) => r::<D>(&row, "handlers").json("spec")?,
            None => None,
        })
    }

    async fn handlers(&self) -> Result<Vec<HandlerSpec>, StoreError> {
        let rows = self
            .read_all(Sql::new("SELECT spec FROM handlers ORDER BY name"))
            .await?;
        Self::decode(&rows, "handlers", |r| {
            r.json("spec")?
                .ok_or_else(|| corrupt("handlers", "spec", "null"))
        })
    }

    async fn remove_handler(&self, name: &str) -> Result<bool, StoreError> {
        let q = Sql::new("DELETE FROM handlers WHERE name = $1").bind(name);
        Ok(self.write(q).await? > 0)
    }

    async fn enqueue(
        &self,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut tx = self.begin().await?;
        let mut ends = Ends::default();
        let out = enqueue_in::<D>(&mut tx, &mut ends, execs, now).await?;
        self.commit(tx, ends).await?;
        Ok(out)
    }

    async fn enqueue_workflow(
        &self,
        workflow: &NewWorkflow,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut tx = self.begin().await?;
        Sql::<D>::new("INSERT INTO workflows (id, name, spec, created_at) VALUES ($1, $2, $3, $4)")
            .bind(workflow.id)
            .bind(workflow.name.as_str())
            .bind(workflow.spec.to_string())
            .bind(now)
            .execute(&mut tx)
            .await?;
        let mut ends = Ends::default();
        let out = enqueue_in::<D>(&mut tx, &mut ends, execs, now).await?;
        self.commit(tx, ends).await?;
        Ok(out)
    }

    async fn workflows(&self, limit: usize) -> Result<Vec<WorkflowInfo>, StoreError> {
        let q = Sql::new(
            "SELECT w.id, w.name, w.created_at, w.cancelled_at, e.status, COUNT(e.id) AS n \
             FROM workflows w LEFT JOIN executions e ON e.workflow_id = w.id AND e.next_id IS NULL \
             WHERE w.id IN (SELECT id FROM workflows ORDER BY id DESC LIMIT $1) \
             GROUP BY w.id, w.name, w.created_at, w.cancelled_at, e.status ORDER BY w.id DESC",
        )
        .bind(limit.max(1) as i64);
        let rows = self.read_all(q).await?;
        let mut out: Vec<WorkflowInfo> = Vec::new();
        for row in &rows {
            let row = r::<D>(row, "workflows");
            let id: Uuid = row.get("id")?;
            if out.last().is_none_or(|w| w.id != id) {
                out.push(WorkflowInfo {
                    id,
                    name: row.get("name")?,
                    created_at: Timestamp(row.get("created_at")?),
                    cancelled_at: row.get::<Option<Micros>>("cancelled_at")?.map(Timestamp),
                    steps: BTreeMap::new(),
                });
            }
            if let Some(status) = row.opt_parse::<Status>("status")? {
                let n = row.int("n")?.max(0) as u64;
                out.last_mut()
                    .expect("pushed above")
                    .steps
                    .insert(status, n);
            }
        }
        Ok(out)
    }

    async fn workflow(
        &self,
        id: Uuid,
    ) -> Result<Option<(WorkflowInfo, Value, Vec<Execution>)>, StoreError> {
        let q = Sql::new("SELECT * FROM workflows WHERE id = $1").bind(id);
        let Some(row) = self.read_one(q).await? else {
            return Ok(None);
        };
        let row = r::<D>(&row, "workflows");
        let spec: Value = row.json("spec")?.unwrap_or(Value::Null);
        let mut info = WorkflowInfo {
            id,
            name: row.get("name")?,
            created_at: Timestamp(row.get("created_at")?),
            cancelled_at: row.get::<Option<Micros>>("cancelled_at")?.map(Timestamp),
            steps: BTreeMap::new(),
        };
        let q = Sql::new(
            "SELECT * FROM executions WHERE workflow_id = $1 AND next_id IS NULL ORDER BY id",
        )
        .bind(id);
        let execs = Self::decode(&self.read_all(q).await?, "executions", |r| r.execution())?;
        for e in &execs {
            *info.steps.entry(e.status).or_default() += 1;
        }
        Ok(Some((info, spec, execs)))
    }

    async fn cancel_workflow(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<Option<WorkflowCancel>, StoreError> {
        let mut tx = self.begin().await?;
        let found = Sql::<D>::new(
            "UPDATE workflows SET cancelled_at = COALESCE(cancelled_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut tx)
        .await?;
        if found == 0 {
            return Ok(None);
        }
        let mut ids = Vec::new();
        let q = Sql::<D>::new(
            "SELECT id FROM executions WHERE workflow_id = $1 \
             AND status IN ('pending', 'waiting', 'running') ORDER BY id",
        );
        for row in q.bind(id).fetch_all(&mut tx).await? {
            ids.push(D::get::<Uuid>(&row, 0)?);
        }
        let mut ends = Ends::default();
        let done = cancel_ids::<D>(&mut tx, &mut ends, &ids, reason, now).await?;
        self.commit(tx, ends).await?;
        Ok(Some(done))
    }

    async fn cancel_many(
        &self,
        ids: &[Uuid],
        reason: &str,
        now: Micros,
    ) -> Result<WorkflowCancel, StoreError> {
        let mut tx = self.begin().await?;
        let mut ends = Ends::default();
        let done = cancel_ids::<D>(&mut tx, &mut ends, ids, reason, now).await?;
        self.commit(tx, ends).await?;
        Ok(done)
    }

    async fn retry(&self, id: Uuid, now: Micros) -> Result<RetryRequest, StoreError> {
        let mut tx = self.begin().await?;
        let q = Sql::<D>::new(format!(
            "SELECT status, next_id, attempt, max_attempts, unique_key, after_policy \
             FROM executions WHERE id = $1{}",
            D::FOR_UPDATE
        ));
        let Some(row) = q.bind(id).fetch_optional(&mut tx).await? else {
            return Ok(RetryRequest::NotFound);
        };
        let row = r::<D>(&row, "executions");
        let status: Status = row.parse("status")?;
        if let Some(next) = row.get::<Option<Uuid>>("next_id")? {
            return Ok(RetryRequest::AlreadyRetried(next));
        }
        match status {
            Status::Failed | Status::Cancelled => {}
            Status::Succeeded => return Ok(RetryRequest::Succeeded),
            other => return Ok(RetryRequest::NotEnded(other)),
        }
        let attempt = row.int("attempt")? as u32 + 1;
        let next = crate::model::Retry {
            attempt,
            max_attempts: (row.int("max_attempts")? as u32).max(attempt),
            run_at: now,
            snooze: false,
        };
        let new_id = Uuid::now_v7();
        if let Some(key) = row.get::<Option<String>>("unique_key")? {
            match take_key::<D>(&mut tx, &key, new_id, now).await? {
                None => {}
                // Held (--unique-for) since this very attempt ended: the
                // retry takes it over.
                Some(holder) if holder == id => {
                    Sql::<D>::new(
                        "UPDATE unique_keys SET execution_id = $2, held_until = NULL \
                         WHERE key = $1 AND execution_id = $3",
                    )
                    .bind(key.as_str())
                    .bind(new_id)
                    .bind(id)
                    .execute(&mut tx)
                    .await?;
                }
                Some(holder) => return Ok(RetryRequest::KeyHeld(holder)),
            }
        }
        schedule_retry::<D>(&mut tx, id, next, now, new_id).await?;
        if row.get::<Option<String>>("after_policy")?.is_some() {
            // It reads its parents' outputs again.
            Sql::<D>::new(
                "INSERT INTO dependencies (child_id, parent_id) \
                 SELECT $2, parent_id FROM dependencies WHERE child_id = $1",
            )
            .bind(id)
            .bind(new_id)
            .execute(&mut tx)
            .await?;
        }
        D::notify(&mut tx, "work").await?;
        tx.commit().await?;
        Ok(RetryRequest::Retried(new_id))
    }

    async fn links(&self, id: Uuid) -> Result<Links, StoreError> {
        let ids = |sql: &'static str| async move {
            let rows = self.read_all(Sql::new(sql).bind(id)).await?;
            Self::decode(&rows, "dependencies", |r| r.get::<Uuid>("id"))
        };
        Ok(Links {
            parents: ids(
                "SELECT parent_id AS id FROM dependencies WHERE child_id = $1 ORDER BY parent_id",
            )
            .await?,
            children: ids(
                "SELECT child_id AS id FROM dependencies WHERE parent_id = $1 ORDER BY child_id",
            )
            .await?,
        })
    }

    async fn ids_matching(
        &self,
        table: IdTable,
        hex: &str,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let hex = hex.to_ascii_uppercase();
        if hex.is_empty() || hex.len() > 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let table = match table {
            IdTable::Executions => "executions",
            IdTable::Workflows => "workflows",
        };
        // A prefix: the ids between it padded with 0s and with Fs.
        let pad = |c: char| {
            let full: String = hex.chars().chain(std::iter::repeat(c)).take(32).collect();
            Uuid::parse_str(&full).expect("32 hex digits")
        };
        let sql =
            format!("SELECT id FROM {table} WHERE id >= $1 AND id <= $2 ORDER BY id LIMIT $3");
        let rows = self
            .read_all(
                Sql::new(&sql)
                    .bind(pad('0'))
                    .bind(pad('F'))
                    .bind(limit as i64),
            )
            .await?;
        let mut ids = Self::decode(&rows, table, |r| r.get::<Uuid>("id"))?;
        let column = D::UUID_HEX.replace("{}", "id");
        let sql = format!("SELECT id FROM {table} WHERE {column} LIKE $1 ORDER BY id LIMIT $2");
        let rows = self
            .read_all(Sql::new(&sql).bind(format!("%{hex}")).bind(limit as i64))
            .await?;
        for id in Self::decode(&rows, table, |r| r.get::<Uuid>("id"))? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn claim(&self, node: &str, limit: usize, now: Micros) -> Result<Claims, StoreError> {
        // The statements are borrowed, never copied, per claim.
        fn claim<'a, D: Dialect>(
            sql: &'a str,
            now: Micros,
            node: &'a str,
            limit: usize,
        ) -> Sql<'a, D> {
            Sql::new(sql)
                .bind(now)
                .bind(node)
                .bind(limit as i64)
                .bind((limit * 2).max(64) as i64)
        }
        let mut now = now;
        let mut next_token_at = None;
        let mut rows = Vec::new();
        let mut claimed = Vec::new();
        let cached = self.any_limits().await?;
        if !cached.any {
            // The plain claim takes nothing once any limit exists, so that
            // a limit set since the cache was read is never passed over.
            let mut conn = self.db.writer().acquire().await?;
            // Stamped once the connection is ours: a wait for it (SQLite's
            // one writer) may have let parents end that this claim sees.
            now = now.max(crate::model::now_micros());
            rows = claim::<D>(&self.claim_simple, now, node, limit)
                .fetch_all(&mut *conn)
                .await?;
            if rows.is_empty() {
                self.limits_changed();
            }
            claimed = Self::decode(&rows, "executions", decode_claim)?;
        }
        if rows.is_empty() && (cached.any || self.any_limits().await?.any) {
            // Limited claims count what runs and what started: on
            // PostgreSQL they take turns (the dialect's lock, which queue
            // changes take too), so two nodes never both fill the last
            // slot. Which limits exist is read in the claim's transaction,
            // so a change is never half seen. A rated queue's starts are
            // recorded in the same transaction.
            let mut tx = self.begin().await?;
            if let Some(lock) = D::CLAIM_LOCK {
                Sql::<D>::new(lock).execute(&mut tx).await?;
            }
            let limits = read_limits::<D>(&mut tx).await?;
            self.cache_limits(limits);
            let sql = if limits.any {
                &self.claim_limited[limits.kinds.index()]
            } else {
                &self.claim_simple
            };
            // Its turn may have come after ends that it now sees: its
            // starts are stamped from then, not from before the wait.
            now = now.max(crate::model::now_micros());
            rows = claim::<D>(sql, now, node, limit).fetch_all(&mut tx).await?;
            claimed = Self::decode(&rows, "executions", decode_claim)?;
            // The starts are counted at their stamps (the server's clock
            // may be later than `now` on PostgreSQL).
            for (c, _) in &claimed {
                now = now.max(c.started_at);
            }
            if limits.kinds.rates {
                let mut started: BTreeMap<String, i64> = BTreeMap::new();
                for row in &rows {
                    *started.entry(D::get(row, "queue")?).or_default() += 1;
                }
                if !started.is_empty() {
                    let mut q = Sql::<D>::new(
                        "INSERT INTO queue_starts (queue, at, n) \
                         SELECT v.column1, v.column2, v.column3 FROM (",
                    );
                    q.values(&started, |t, (queue, n)| {
                        t.bind(queue.as_str()).bind(now).bind(*n);
                    });
                    q.push(") AS v WHERE v.column1 IN (SELECT name FROM queues WHERE rate_n IS NOT NULL)");
                    q.execute(&mut tx).await?;
                    Sql::<D>::new(PRUNE_STARTS)
                        .bind(now)
                        .execute(&mut tx)
                        .await?;
                }
                if rows.len() < limit {
                    let next = Sql::<D>::new(NEXT_TOKEN)
                        .bind(now)
                        .fetch_all(&mut tx)
                        .await?;
                    next_token_at = match next.first() {
                        Some(row) => D::get::<Option<i64>>(row, 0)?,
                        None => None,
                    };
                }
            }
            tx.commit().await?;
        }
        let with_parents: Vec<Uuid> = claimed
            .iter()
            .filter(|(_, parents)| *parents)
            .map(|(c, _)| c.id)
            .collect();
        let mut claimed: Vec<Claimed> = claimed.into_iter().map(|(c, _)| c).collect();
        if !with_parents.is_empty() {
            let mut inputs = self.inputs(&with_parents).await?;
            for c in &mut claimed {
                c.inputs = inputs.remove(&c.id).unwrap_or_default();
            }
        }
        // RETURNING gives no order; run the best first.
        claimed.sort_by_key(|c| c.id);
        Ok(Claims {
            executions: claimed,
            next_token_at,
        })
    }

    async fn has_due(&self, now: Micros) -> Result<bool, StoreError> {
        self.read_scalar(
            Sql::new(
                "SELECT EXISTS (SELECT 1 FROM executions WHERE status = 'pending' AND run_at <= $1)",
            )
            .bind(now),
        )
        .await
    }

    async fn next_run_at(&self) -> Result<Option<Micros>, StoreError> {
        self.read_scalar(Sql::new(
            "SELECT MIN(run_at) FROM executions WHERE status = 'pending'",
        ))
        .await
    }

    async fn apply(&self, batch: &Batch) -> Result<Vec<Finished>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        // Each kind of write is one statement per chunk of rows, never one
        // per execution: every statement is a round trip.
        insert_lines::<D>(&mut tx, &batch.logs).await?;
        write_progress::<D>(&mut tx, &batch.progress, &batch.pids).await?;
        let mut finished = Vec::with_capacity(batch.completions.len());
        let (mut ended, mut chained, mut promoted) = (Vec::new(), Vec::new(), false);
        let mut ends = Ends::default();
        for chunk in batch.completions.chunks(rows_per_statement(10)) {
            let applied = end_rows::<D>(&mut tx, chunk).await?;
            for c in chunk {
                let Some(a) = applied.get(&c.id) else {
                    continue;
                };
                ends.add(
                    a.handler.clone(),
                    c.outcome.status(),
                    a.started_at,
                    c.finished_at,
                );
                // An execution asked to stop is not tried again.
                let next = match a.cancel_requested {
                    true => None,
                    false => c.outcome.retry(&a.policy, a.attempt, c.finished_at),
                };
                let retry_at = next.as_ref().map(|n| n.run_at);
                let retry = match next {
                    Some(next) => {
                        // Due at once (an interruption, a snooze of 0):
                        // this node claims it now, not at its next poll.
                        promoted |= next.run_at <= c.finished_at;
                        let id = Uuid::now_v7();
                        schedule_retry::<D>(&mut tx, c.id, next, c.finished_at, id).await?;
                        hand_on_edges::<D>(&mut tx, c.id, id, a.has_parents).await?;
                        Some(id)
                    }
                    None => None,
                };
                if let Some(key) = &a.key {
                    let next = key_next(retry, a.hold, c.finished_at);
                    promoted |= release_key::<D>(&mut tx, key, c.id, next).await?;
                }
                let status = c.outcome.status();
                if retry.is_none() {
                    if a.has_children {
                        ended.push((c.id, status));
                    }
                    chained.extend(
                        a.chain
                            .iter()
                            .filter(|ch| ch.on.matches(status))
                            .map(|ch| (c.id, ch.job.clone(), c.finished_at)),
                    );
                }
                finished.push(Finished {
                    id: c.id,
                    status,
                    retry,
                    retry_at,
                    released: false,
                });
            }
        }
        let mut released =
            settle::<D>(&mut tx, &mut ends, ended, crate::model::now_micros()).await?;
        released |= enqueue_chained::<D>(&mut tx, &chained).await?;
        released |= promoted;
        // Under a limit, an end frees a slot that held executions wait for:
        // this node claims again now rather than at its next poll (which
        // slows down while due rows are held).
        released |= !finished.is_empty() && self.limits_may_exist();
        if released {
            for f in &mut finished {
                f.released = true;
            }
        }
        self.commit(tx, ends).await?;
        Ok(finished)
    }

    async fn execution(&self, id: Uuid) -> Result<Option<Execution>, StoreError> {
        let row = self
            .read_one(Sql::new("SELECT * FROM executions WHERE id = $1").bind(id))
            .await?;
        row.map(|row| r::<D>(&row, "executions").execution())
            .transpose()
    }

    async fn executions(&self, filter: &ExecFilter) -> Result<Vec<Execution>, StoreError> {
        let mut q = match filter.clip {
            None => Sql::new("SELECT * FROM executions WHERE 1 = 1"),
            Some(n) => {
                // The database cuts the two large columns, so that a page of
                // big payloads is never read whole.
                let cut = |c: &str| {
                    format!(
                        "CASE WHEN octet_length({c}) > {n} THEN substr({c}, 1, {n}) ELSE {c} END AS {c}, \
                         CAST(CASE WHEN octet_length({c}) > {n} THEN 1 ELSE 0 END AS BIGINT) AS {c}_truncated"
                    )
                };
                Sql::new(format!(
                    "SELECT {}, {}, {} FROM executions WHERE 1 = 1",
                    EXECUTION_COLUMNS.join(", "),
                    cut("payload"),
                    cut("output")
                ))
            }
        };
        push_filter(&mut q, filter);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit.max(1) as i64);
        let rows = self.read_all(q).await?;
        match filter.clip {
            None => Self::decode(&rows, "executions", |r| r.execution()),
            Some(_) => Self::decode(&rows, "executions", |r| r.execution_clipped()),
        }
    }

    async fn logs(
        &self,
        id: Uuid,
        after_seq: i64,
        min_level: Option<Level>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let page = LogPage {
            after_seq,
            min_level,
            limit,
            ..Default::default()
        };
        self.log_page(id, &page).await
    }

    async fn log_page(&self, id: Uuid, page: &LogPage) -> Result<Vec<LogEntry>, StoreError> {
        let mut page = page.clone();
        if let Some(max) = page.max_bytes {
            // The sizes first (no text is read), then as many lines as fit.
            let mut q = Sql::new("SELECT seq, octet_length(message) + COALESCE(octet_length(fields), 0) FROM logs WHERE ");
            Self::log_filters(&mut q, id, &page);
            let sizes = self.read_all(q).await?;
            let (mut total, mut last) = (0i64, None);
            for row in &sizes {
                let seq: i64 = D::get(row, 0)?;
                let size: i64 = D::get(row, 1)?;
                if last.is_some() && total + size > max as i64 {
                    break;
                }
                total += size;
                last = Some(seq);
            }
            let Some(last) = last else {
                return Ok(Vec::new());
            };
            // Reading from the end, the last that fit is the first shown.
            if page.from_end {
                page.after_seq = page.after_seq.max(last - 1);
            } else {
                page.before_seq = Some(last + 1);
            }
        }
        let mut q = Sql::new("SELECT seq, ts, level, stream, message, fields FROM logs WHERE ");
        Self::log_filters(&mut q, id, &page);
        let mut lines = Self::decode(&self.read_all(q).await?, "logs", |r| r.log())?;
        if page.from_end {
            lines.reverse();
        }
        Ok(lines)
    }

    async fn last_logs(&self, id: Uuid, n: usize) -> Result<Vec<LogEntry>, StoreError> {
        let q = Sql::new(LAST_LOGS).bind(id).bind(n as i64);
        Self::decode(&self.read_all(q).await?, "logs", |r| r.log())
    }

    async fn request_cancel(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<CancelRequest, StoreError> {
        let mut tx = self.begin().await?;
        let q = Sql::<D>::new(format!(
            "SELECT status FROM executions WHERE id = $1{}",
            D::FOR_UPDATE
        ));
        let Some(row) = q.bind(id).fetch_optional(&mut tx).await? else {
            return Ok(CancelRequest::NotFound);
        };
        let mut ends = Ends::default();
        let outcome = match r::<D>(&row, "executions").parse("status")? {
            Status::Pending | Status::Waiting => {
                let item = [(id, "cancelled before it started".to_string())];
                let ended =
                    cancel_unstarted::<D>(&mut tx, &mut ends, &item, Some(reason), now).await?;
                let ended = ended
                    .into_iter()
                    .map(|id| (id, Status::Cancelled))
                    .collect();
                settle::<D>(&mut tx, &mut ends, ended, now).await?;
                CancelRequest::CancelledPending
            }
            Status::Running => {
                Sql::<D>::new(
                    "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, $2), \
                     cancel_reason = COALESCE(cancel_reason, $3) WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(reason)
                .execute(&mut tx)
                .await?;
                D::notify(&mut tx, "cancel").await?;
                CancelRequest::Requested
            }
            done => CancelRequest::AlreadyFinished(done),
        };
        self.commit(tx, ends).await?;
        Ok(outcome)
    }

    async fn cancel_requests(&self, node: &str) -> Result<Vec<(Uuid, String)>, StoreError> {
        let q = Sql::new(
            "SELECT id, COALESCE(cancel_reason, '') AS reason FROM executions \
             WHERE status = 'running' AND node = $1 AND cancel_requested_at IS NOT NULL",
        )
        .bind(node);
        Self::decode(&self.read_all(q).await?, "executions", |r| {
            Ok((r.get("id")?, r.get("reason")?))
        })
    }

    async fn register_node(&self, node: &NodeInfo) -> Result<(), StoreError> {
        self.write(
            Sql::new(
                "INSERT INTO nodes (id, hostname, pid, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(node.id.as_str())
            .bind(node.hostname.as_str())
            .bind(node.pid)
            .bind(node.started_at)
            .bind(node.heartbeat_at),
        )
        .await?;
        Ok(())
    }

    async fn heartbeat_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        let q = Sql::new("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1");
        self.write(q.bind(node).bind(now)).await?;
        Ok(())
    }

    async fn stop_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        let q = Sql::new("UPDATE nodes SET stopped_at = $2 WHERE id = $1");
        self.write(q.bind(node).bind(now)).await?;
        Ok(())
    }

    async fn live_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM nodes WHERE heartbeat_at >= $1 AND stopped_at IS NULL ORDER BY started_at",
        )
        .bind(since);
        let nodes = Self::decode(&self.read_all(q).await?, "nodes", |r| r.node(""))?;
        Ok(nodes.into_iter().flatten().collect())
    }

    async fn foreign_running(&self, node: &str) -> Result<Vec<ForeignRunning>, StoreError> {
        let q = Sql::new(
            "SELECT e.id, e.pid AS exec_pid, n.id AS n_id, n.hostname AS n_hostname, \
                    n.pid AS n_pid, n.started_at AS n_started_at, \
                    n.heartbeat_at AS n_heartbeat_at, n.stopped_at AS n_stopped_at \
             FROM executions e LEFT JOIN nodes n ON n.id = e.node \
             WHERE e.status = 'running' AND (e.node IS NULL OR e.node != $1)",
        )
        .bind(node);
        Self::decode(&self.read_all(q).await?, "executions", |r| {
            Ok(ForeignRunning {
                id: r.get("id")?,
                pid: r.get("exec_pid")?,
                node: r.node("n_")?,
            })
        })
    }

    async fn insert_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let q = job_columns(
            Sql::new(
                "INSERT INTO jobs (name, handler, mode, payload, kind, schedule, priority, \
             queue, retries, backoff_ms, timeout_ms, overlap, misfire, max_parallel, max_runs, \
             start_at, end_at, paused, chain, concurrency_key, next_run_at, created_at, \
             updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                     $18, $19, $20, $21, $22, $22) ON CONFLICT DO NOTHING",
            ),
            spec,
        )
        .bind(next_run_at)
        .bind(now);
        let inserted = self.write(q).await? == 1;
        // A job may bring a per-job cap: claims look at once.
        self.jobs_changed().await?;
        Ok(inserted)
    }

    async fn replace_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        // The scheduler's passes are fenced on next_run_at: one that read
        // the old definition and would write after this no longer applies.
        let q = job_columns(
            Sql::new(
                "UPDATE jobs SET handler = $2, mode = $3, payload = $4, kind = $5, schedule = $6, \
             priority = $7, queue = $8, retries = $9, backoff_ms = $10, timeout_ms = $11, \
             overlap = $12, misfire = $13, max_parallel = $14, max_runs = $15, start_at = $16, \
             end_at = $17, paused = $18, chain = $19, concurrency_key = $20, \
             next_run_at = $21, updated_at = $22, completed_at = NULL, daemon_streak = 0 \
             WHERE name = $1",
            ),
            spec,
        )
        .bind(next_run_at)
        .bind(now);
        let changed = self.write(q).await? == 1;
        self.jobs_changed().await?;
        Ok(changed)
    }

    async fn job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        let q = Sql::new("SELECT * FROM jobs WHERE name = $1").bind(name);
        let row = self.read_one(q).await?;
        row.map(|row| r::<D>(&row, "jobs").job()).transpose()
    }

    async fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows = self
            .read_all(Sql::new("SELECT * FROM jobs ORDER BY name"))
            .await?;
        Self::decode(&rows, "jobs", |r| r.job())
    }

    async fn remove_job(&self, name: &str) -> Result<bool, StoreError> {
        let q = Sql::new("DELETE FROM jobs WHERE name = $1").bind(name);
        let removed = self.write(q).await? > 0;
        self.jobs_changed().await?;
        Ok(removed)
    }

    async fn set_job_paused(
        &self,
        name: &str,
        paused: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let q = Sql::new("UPDATE jobs SET paused = $2, updated_at = $3 WHERE name = $1");
        let found = self
            .write(q.bind(name).bind(paused as i64).bind(now))
            .await?
            > 0;
        self.jobs_changed().await?;
        Ok(found)
    }

    async fn due_jobs(&self, now: Micros, limit: usize) -> Result<Vec<Job>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= $1 \
             ORDER BY next_run_at LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64);
        Self::decode(&self.read_all(q).await?, "jobs", |r| r.job())
    }

    async fn next_due(&self) -> Result<Option<Micros>, StoreError> {
        self.read_scalar(Sql::new(
            "SELECT MIN(next_run_at) FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL",
        ))
        .await
    }

    async fn active_jobs(&self, names: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for chunk in names.chunks(rows_per_statement(1)) {
            let mut q = Sql::new(
                "SELECT DISTINCT job FROM executions WHERE status IN ('pending', 'running') \
                 AND job IN (",
            );
            q.push_list(chunk.iter().map(String::as_str)).push(")");
            for row in self.read_all(q).await? {
                out.insert(D::get(&row, 0)?);
            }
        }
        Ok(out)
    }

    async fn active_executions(&self, job: &str) -> Result<Vec<Uuid>, StoreError> {
        let q = Sql::new(
            "SELECT id FROM executions WHERE job = $1 AND status IN ('pending', 'running')",
        )
        .bind(job);
        Self::decode(&self.read_all(q).await?, "executions", |r| r.get("id"))
    }

    async fn idle_daemons(&self) -> Result<Vec<IdleDaemon>, StoreError> {
        let rows = self.read_all(Sql::new(
            "SELECT j.*, \
               (SELECT e.started_at FROM executions e WHERE e.job = j.name ORDER BY e.id DESC LIMIT 1) AS last_started, \
               (SELECT e.finished_at FROM executions e WHERE e.job = j.name ORDER BY e.id DESC LIMIT 1) AS last_finished, \
               (SELECT COUNT(*) FROM executions e WHERE e.job = j.name) AS total \
             FROM jobs j WHERE j.kind = 'daemon' AND j.paused = 0 AND j.completed_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.job = j.name \
                               AND e.status IN ('pending', 'running'))",
        ))
        .await?;
        Self::decode(&rows, "jobs", |r| {
            Ok(IdleDaemon {
                job: r.job()?,
                last_run: match r.int("total")? {
                    0 => None,
                    _ => Some((r.get("last_started")?, r.get("last_finished")?)),
                },
            })
        })
    }

    async fn advance_jobs(&self, steps: &[JobAdvance], now: Micros) -> Result<usize, StoreError> {
        if steps.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let mut inserted = 0;
        // Statements per chunk, not per job: 10,000 jobs due in the same
        // second are a few statements.
        for chunk in steps.chunks(rows_per_statement(EXECUTION_BINDS)) {
            // 1. Advance the jobs that are still as the pass read them; the
            //    rest were advanced by another supervisor meanwhile.
            let mut q = Sql::<D>::new(
                "UPDATE jobs SET next_run_at = v.column4, runs = runs + v.column5, \
                   missed = missed + v.column6, \
                   completed_at = CASE WHEN v.column7 THEN COALESCE(completed_at, ",
            );
            q.push_bind(now)
                .push(") ELSE completed_at END, daemon_streak = COALESCE(v.column8, daemon_streak), updated_at = ")
                .push_bind(now)
                .push(" FROM (");
            q.values(chunk, |t, s| {
                t.bind(s.name.as_str())
                    .bind(s.expected_runs as i64)
                    .bind(s.expected_next)
                    .bind(s.next)
                    .bind(i64::from(s.run.is_some()))
                    .bind(s.missed as i64)
                    .bind(s.complete)
                    .bind(s.daemon_streak.map(|v| v as i64));
            });
            q.push(
                ") AS v WHERE jobs.name = v.column1 AND jobs.runs = v.column2 \
                 AND jobs.next_run_at IS NOT DISTINCT FROM v.column3 RETURNING jobs.name",
            );
            let mut owned = HashSet::new();
            for row in q.fetch_all(&mut tx).await? {
                owned.insert(D::get::<String>(&row, 0)?);
            }
            // 2. Insert their executions; an occurrence already present (a
            //    job removed and added again) is passed over and not counted.
            let runs: Vec<&NewExecution> = chunk
                .iter()
                .filter(|s| owned.contains(&s.name))
                .filter_map(|s| s.run.as_ref())
                .collect();
            let ids = insert_executions::<D>(&mut tx, &runs, now, pending).await?;
            inserted += ids.len();
            for e in runs.iter().filter(|e| !ids.contains(&e.id)) {
                Sql::<D>::new("UPDATE jobs SET runs = runs - 1 WHERE name = $1")
                    .bind(e.job.as_deref().unwrap_or(""))
                    .execute(&mut tx)
                    .await?;
            }
        }
        if inserted > 0 {
            D::notify(&mut tx, "work").await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let rows = self
            .read_all(
                Sql::new(format!(
                    // Counted once over each status's partial index (`queue
                    // || ''` keeps SQLite off the queue's whole history),
                    // not per queue.
                    "WITH pend AS (SELECT queue || '' AS queue, COUNT(*) AS n FROM executions \
                                   WHERE status = 'pending' GROUP BY queue || ''), \
                          run AS (SELECT queue, COUNT(*) AS n FROM executions \
                                  WHERE status = 'running' GROUP BY queue), \
                          names AS (SELECT name FROM queues UNION SELECT queue FROM pend \
                                    UNION SELECT queue FROM run UNION SELECT 'default'), \
                          rated AS ({RATE_FREE}) \
                     SELECT n.name, q.max_running, COALESCE(q.paused, 0) AS paused, q.key_limit, \
                       q.rate_n, q.rate_ms, r.rfree, \
                       COALESCE(p.n, 0) AS pending, COALESCE(ru.n, 0) AS running \
                     FROM names n LEFT JOIN queues q ON q.name = n.name \
                     LEFT JOIN rated r ON r.name = n.name \
                     LEFT JOIN pend p ON p.queue = n.name LEFT JOIN run ru ON ru.queue = n.name \
                     ORDER BY n.name"
                ))
                .bind(crate::model::now_micros()),
            )
            .await?;
        Self::decode(&rows, "queues", |r| {
            let rate = match (r.opt_u64("rate_n")?, r.opt_u64("rate_ms")?) {
                (Some(n), Some(per_ms)) => Some(crate::model::Rate {
                    n: n as u32,
                    per_ms,
                }),
                _ => None,
            };
            Ok(QueueInfo {
                name: r.get("name")?,
                max_running: r.opt_u64("max_running")?.map(|v| v as u32),
                paused: r.flag("paused")?,
                pending: r.int("pending")? as u64,
                running: r.int("running")? as u64,
                key_limit: r.opt_u64("key_limit")?.map(|v| v as u32),
                tokens: rate.and(r.get::<Option<i64>>("rfree")?.map(|t| t.max(0) as u64)),
                rate,
            })
        })
    }

    async fn set_queue(&self, name: &str, change: &QueueChange) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Between limited claims, never during one: a claim applies a
        // change wholly or not yet.
        if let Some(lock) = D::CLAIM_LOCK {
            Sql::<D>::new(lock).execute(&mut tx).await?;
        }
        Sql::<D>::new("INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(name)
            .execute(&mut tx)
            .await?;
        // Starts recorded under an earlier rate still count in the window
        // of a new one: they did happen.
        let rate = change
            .rate
            .map(|r| r.map(|r| (i64::from(r.n), r.per_ms as i64)));
        let sets = [
            ("max_running", change.limit.map(|l| l.map(i64::from))),
            ("key_limit", change.key_limit.map(|l| l.map(i64::from))),
            ("rate_n", rate.map(|r| r.map(|r| r.0))),
            ("rate_ms", rate.map(|r| r.map(|r| r.1))),
            ("paused", change.paused.map(|p| Some(i64::from(p)))),
        ];
        for (column, value) in sets {
            if let Some(value) = value {
                Sql::<D>::new(format!("UPDATE queues SET {column} = $2 WHERE name = $1"))
                    .bind(name)
                    .bind(value)
                    .execute(&mut tx)
                    .await?;
            }
        }
        D::notify(&mut tx, "limits").await?;
        tx.commit().await?;
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
        let mut tx = self.begin().await?;
        // Expired unique keys go whatever the job.
        Sql::<D>::new("DELETE FROM unique_keys WHERE held_until IS NOT NULL AND held_until < $1")
            .bind(crate::model::now_micros())
            .execute(&mut tx)
            .await?;
        // The timeline's minutes go with the global retention.
        if job.is_none() {
            Sql::<D>::new("DELETE FROM timeline WHERE minute < $1")
                .bind(before.div_euclid(MINUTE_US))
                .execute(&mut tx)
                .await?;
        }
        // Never a parent whose child has yet to run: it reads its output.
        let mut q = Sql::<D>::new(
            "SELECT id FROM executions WHERE status IN ('succeeded', 'failed', 'cancelled') \
             AND NOT EXISTS (SELECT 1 FROM dependencies d JOIN executions c ON c.id = d.child_id \
               WHERE d.parent_id = executions.id AND c.status IN ('waiting', 'pending', 'running')) \
             AND finished_at < ",
        );
        q.push_bind(before);
        match job {
            Some(j) => {
                q.push(" AND job = ").push_bind(j);
            }
            None if !except.is_empty() => {
                q.push(" AND job NOT IN (")
                    .push_list(except.iter().map(String::as_str))
                    .push(")");
            }
            None => {}
        }
        q.push(" LIMIT ")
            .push_bind(limit.clamp(1, MAX_BINDS) as i64);
        let mut ids = Vec::new();
        for row in q.fetch_all(&mut tx).await? {
            ids.push(D::get::<Uuid>(&row, 0)?);
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok((0, 0));
        }
        for column in ["child_id", "parent_id"] {
            let mut q = Sql::<D>::new(format!("DELETE FROM dependencies WHERE {column} IN ("));
            q.push_list(ids.iter().copied()).push(")");
            q.execute(&mut tx).await?;
        }
        let mut deleted = [0u64; 2];
        for (i, (table, column)) in [("logs", "execution_id"), ("executions", "id")]
            .into_iter()
            .enumerate()
        {
            let mut q = Sql::<D>::new(format!("DELETE FROM {table} WHERE {column} IN ("));
            q.push_list(ids.iter().copied()).push(")");
            deleted[i] = q.execute(&mut tx).await?;
        }
        // A workflow goes with its last step.
        Sql::<D>::new(
            "DELETE FROM workflows WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM executions e WHERE e.workflow_id = workflows.id)",
        )
        .bind(before)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok((deleted[1], deleted[0]))
    }

    async fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = self
            .read_all(Sql::new(
                "SELECT handler, status, COUNT(*) AS n FROM executions \
             GROUP BY handler, status ORDER BY handler, status",
            ))
            .await?;
        Self::decode(&rows, "executions", |r| {
            Ok((
                r.get("handler")?,
                r.get("status")?,
                r.int("n")?.max(0) as u64,
            ))
        })
    }

    async fn declared(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let q = Sql::new("SELECT name FROM declared WHERE kind = $1 ORDER BY name").bind(kind);
        Self::decode(&self.read_all(q).await?, "declared", |r| r.get("name"))
    }

    async fn set_declared(&self, kind: &str, names: &[String]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Sql::<D>::new("DELETE FROM declared WHERE kind = $1")
            .bind(kind)
            .execute(&mut tx)
            .await?;
        for chunk in names.chunks(rows_per_statement(2)) {
            let mut q = Sql::<D>::new("INSERT INTO declared (kind, name) ");
            q.values(chunk, |t, name| {
                t.bind(kind).bind(name.as_str());
            });
            q.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stats(&self, job: Option<&str>) -> Result<Vec<JobStats>, StoreError> {
        // p95 by nearest rank: the ceil(0.95 n)-th shortest duration.
        let q = Sql::new(
            "WITH d AS (SELECT job, finished_at - started_at AS us, \
               ROW_NUMBER() OVER (PARTITION BY job ORDER BY finished_at - started_at) AS rn, \
               COUNT(*) OVER (PARTITION BY job) AS n FROM executions \
               WHERE finished_at IS NOT NULL AND started_at IS NOT NULL \
                 AND (CAST($1 AS TEXT) IS NULL OR job = $1)) \
             SELECT e.job, COUNT(*) AS attempts, \
               SUM(CASE WHEN previous_id IS NULL THEN 1 ELSE 0 END) AS runs, \
               SUM(CASE WHEN next_id IS NULL AND status = 'succeeded' THEN 1 ELSE 0 END) AS succeeded, \
               SUM(CASE WHEN next_id IS NULL AND status = 'failed' THEN 1 ELSE 0 END) AS failed, \
               SUM(CASE WHEN next_id IS NULL AND status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled, \
               (SELECT CAST(MIN(us) AS DOUBLE PRECISION) FROM d WHERE d.job = e.job) AS min_us, \
               (SELECT CAST(AVG(us) AS DOUBLE PRECISION) FROM d WHERE d.job = e.job) AS avg_us, \
               (SELECT CAST(MAX(us) AS DOUBLE PRECISION) FROM d WHERE d.job = e.job) AS max_us, \
               (SELECT CAST(us AS DOUBLE PRECISION) FROM d WHERE d.job = e.job \
                  AND d.rn = (d.n * 95 + 99) / 100) AS p95_us, \
               MAX(CASE WHEN status = 'succeeded' THEN finished_at END) AS last_success, \
               MAX(CASE WHEN status = 'failed' THEN finished_at END) AS last_failure, \
               (SELECT f.error FROM executions f WHERE f.job = e.job AND f.status = 'failed' \
                  ORDER BY f.finished_at DESC LIMIT 1) AS last_error \
             FROM executions e WHERE (CAST($1 AS TEXT) IS NULL OR e.job = $1) \
             GROUP BY e.job ORDER BY e.job",
        )
        .bind(job);
        Self::decode(&self.read_all(q).await?, "executions", |r| {
            let count = |c: &str| Ok::<_, StoreError>(r.get::<Option<i64>>(c)?.unwrap_or(0) as u64);
            let ms = |c: &str| Ok::<_, StoreError>(r.get::<Option<f64>>(c)?.map(|us| us / 1000.0));
            let time = |c: &str| Ok::<_, StoreError>(r.get::<Option<Micros>>(c)?.map(Timestamp));
            let (succeeded, failed, cancelled) =
                (count("succeeded")?, count("failed")?, count("cancelled")?);
            let finished = succeeded + failed + cancelled;
            Ok(JobStats {
                job: r.get("job")?,
                runs: count("runs")?,
                attempts: count("attempts")?,
                succeeded,
                failed,
                cancelled,
                success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
                min_ms: ms("min_us")?,
                avg_ms: ms("avg_us")?,
                p95_ms: ms("p95_us")?,
                max_ms: ms("max_us")?,
                last_success: time("last_success")?,
                last_failure: time("last_failure")?,
                last_error: r.get("last_error")?,
            })
        })
    }

    async fn recent_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM nodes WHERE heartbeat_at >= $1 ORDER BY started_at DESC LIMIT 1000",
        )
        .bind(since);
        let nodes = Self::decode(&self.read_all(q).await?, "nodes", |r| r.node(""))?;
        Ok(nodes.into_iter().flatten().collect())
    }

    async fn timeline(&self, since: Micros) -> Result<Vec<TimelineRow>, StoreError> {
        // Whole minutes, from the one `since` falls in, summed over shards.
        let q = Sql::new(
            "SELECT minute, handler, status, CAST(SUM(n) AS BIGINT) AS n, \
               CAST(SUM(timed) AS BIGINT) AS timed, CAST(SUM(sum_us) AS BIGINT) AS sum_us, \
               MAX(max_us) AS max_us \
             FROM timeline WHERE minute >= $1 \
             GROUP BY minute, handler, status ORDER BY minute, handler, status",
        )
        .bind(since.div_euclid(MINUTE_US));
        Self::decode(&self.read_all(q).await?, "timeline", |r| {
            let minute: i64 = r.get("minute")?;
            let timed: i64 = r.get("timed")?;
            let ms = |us: f64| (timed > 0).then(|| us / 1000.0);
            Ok(TimelineRow {
                minute: Timestamp(minute * MINUTE_US),
                handler: r.get("handler")?,
                status: r.parse("status")?,
                count: r.get::<i64>("n")?.max(0) as u64,
                avg_ms: ms(r.get::<i64>("sum_us")? as f64 / timed.max(1) as f64),
                max_ms: ms(r.get::<i64>("max_us")? as f64),
            })
        })
    }

    async fn stuck(&self, now: Micros, stale: Micros) -> Result<Vec<Execution>, StoreError> {
        let q = Sql::new(
            // Driven by the running rows' partial index, not by walking
            // every execution in id order.
            "SELECT e.* FROM executions e LEFT JOIN nodes n ON n.id = e.node \
             WHERE e.id IN (SELECT id FROM executions WHERE status = 'running') \
             AND e.status = 'running' AND ( \
               (e.timeout_ms IS NOT NULL AND e.started_at + e.timeout_ms * 1000 < $1) \
               OR n.id IS NULL OR n.heartbeat_at < $2 OR n.stopped_at IS NOT NULL) \
             ORDER BY e.id LIMIT 1000",
        )
        .bind(now)
        .bind(stale);
        Self::decode(&self.read_all(q).await?, "executions", |r| r.execution())
    }

    async fn failed_since(
        &self,
        since: Micros,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let q = Sql::new(
            // Newest first by id (time-ordered): the partial index of failed
            // rows yields them in that order, where sorting by finish time
            // would read every failure ever kept.
            "SELECT * FROM executions WHERE status = 'failed' AND finished_at >= $1 \
               ORDER BY id DESC LIMIT $2",
        )
        .bind(since)
        .bind(limit as i64);
        Self::decode(&self.read_all(q).await?, "executions", |r| r.execution())
    }

    async fn late_jobs(&self, before: Micros) -> Result<Vec<Job>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL \
               AND next_run_at < $1 ORDER BY next_run_at LIMIT 1000",
        )
        .bind(before);
        Self::decode(&self.read_all(q).await?, "jobs", |r| r.job())
    }
}

/// What a completion's statement returns of each execution it ended,
/// packed in one JSON array column (see `Dialect::JSON_ARRAY`), in field
/// order.
#[derive(serde::Deserialize)]
struct AppliedFacts {
    attempt: u32,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_cap_ms: u64,
    unique_key: Option<String>,
    unique_for_ms: Option<i64>,
    cancel_requested_at: Option<Micros>,
    after_policy: Option<String>,
    has_children: i64,
    handler: String,
    started_at: Option<Micros>,
    /// Its job's chain (JSON text).
    chain: Option<String>,
}

/// A completion as the database took it.
struct Applied {
    attempt: u32,
    policy: RetryPolicy,
    key: Option<String>,
    hold: Option<i64>,
    cancel_requested: bool,
    has_parents: bool,
    has_children: bool,
    chain: Vec<Chain>,
    handler: String,
    started_at: Option<Micros>,
}

/// Binds a job's definition as `$1` (name) to `$20` (concurrency key), in
/// the jobs table's column order.
fn job_columns<'a, D: Dialect>(q: Sql<'a, D>, spec: &'a JobSpec) -> Sql<'a, D> {
    q.bind(spec.name.as_str())
        .bind(spec.handler.as_str())
        .bind(spec.mode.map(|m| m.as_str()))
        .bind(spec.payload.to_string())
        .bind(spec.schedule.kind())
        .bind(serde_json::to_string(&spec.schedule).expect("schedules serialize"))
        .bind(spec.priority as i64)
        .bind(spec.queue.as_str())
        .bind(spec.retries as i64)
        .bind(spec.backoff_ms as i64)
        .bind(spec.timeout_ms.map(|v| v as i64))
        .bind(spec.overlap.as_str())
        .bind(spec.misfire.as_str())
        .bind(spec.max_parallel.map(|v| v as i64))
        .bind(spec.max_runs.map(|v| v.min(i64::MAX as u64) as i64))
        .bind(spec.start_at)
        .bind(spec.end_at)
        .bind(spec.paused as i64)
        .bind(
            (!spec.then.is_empty())
                .then(|| serde_json::to_string(&spec.then).expect("chains serialize")),
        )
        .bind(spec.concurrency_key.as_deref())
}

/// Writes a batch's log lines. Fenced: lines of an execution that is no
/// longer running (its node was presumed dead and it was rescued) are not
/// stored. Which are running is read once per batch, with their rows
/// locked on PostgreSQL until the commit, rather than checked line by line.
/// Each kind of write is one statement per chunk of rows, never one per
/// execution: every statement is a round trip.
async fn insert_lines<D: Dialect>(
    conn: &mut Conn<D>,
    logs: &[crate::store::LogRow],
) -> Result<(), StoreError> {
    if logs.is_empty() {
        return Ok(());
    }
    let mut running = HashSet::new();
    let ids: Vec<Uuid> = logs
        .iter()
        .map(|l| l.execution_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for chunk in ids.chunks(rows_per_statement(1)) {
        let mut q = Sql::<D>::new("SELECT id FROM executions WHERE status = 'running' AND id IN (");
        q.push_list(chunk.iter().copied())
            .push(") ORDER BY id")
            .push(D::FOR_UPDATE);
        for row in q.fetch_all(&mut *conn).await? {
            running.insert(D::get::<Uuid>(&row, 0)?);
        }
    }
    let lines: Vec<&crate::store::LogRow> = logs
        .iter()
        .filter(|l| running.contains(&l.execution_id))
        .collect();
    for chunk in lines.chunks(rows_per_statement(7)) {
        let mut q = Sql::<D>::new(
            "INSERT INTO logs (execution_id, seq, ts, level, stream, message, fields) ",
        );
        q.values(chunk, |t, l| {
            t.bind(l.execution_id)
                .bind(l.seq)
                .bind(l.ts)
                .bind(l.level)
                .bind(l.stream)
                .bind(l.message.as_str())
                .bind(l.fields.as_deref());
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.execute(conn).await?;
    }
    Ok(())
}

/// Writes a batch's progress reports and pids (of running executions
/// only).
async fn write_progress<D: Dialect>(
    conn: &mut Conn<D>,
    progress: &[(Uuid, crate::model::ProgressState)],
    pids: &[(Uuid, i64)],
) -> Result<(), StoreError> {
    for chunk in progress.chunks(rows_per_statement(5)) {
        let mut q = Sql::<D>::new(
            "UPDATE executions SET \
             progress_percent = COALESCE(v.column2, progress_percent), \
             progress_message = COALESCE(v.column3, progress_message), \
             progress_done = COALESCE(v.column4, progress_done), \
             progress_total = COALESCE(v.column5, progress_total) FROM (",
        );
        q.values(chunk, |t, (id, p)| {
            t.bind(*id)
                .bind(p.percent)
                .bind(p.message.as_deref())
                .bind(p.done)
                .bind(p.total);
        });
        q.push(") AS v WHERE executions.id = v.column1 AND executions.status = 'running'");
        q.execute(conn).await?;
    }
    for chunk in pids.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new("UPDATE executions SET pid = v.column2 FROM (");
        q.values(chunk, |t, (id, pid)| {
            t.bind(*id).bind(*pid);
        });
        q.push(") AS v WHERE executions.id = v.column1 AND executions.status = 'running'");
        q.execute(conn).await?;
    }
    Ok(())
}

/// Ends the executions of `chunk` that are still running (a late or
/// duplicate completion, e.g. after a rescue, changes nothing); returns,
/// for each ended, what the decisions after an end need.
async fn end_rows<D: Dialect>(
    conn: &mut Conn<D>,
    chunk: &[crate::store::Completion],
) -> Result<HashMap<Uuid, Applied>, StoreError> {
    let mut q = Sql::<D>::new(
        "UPDATE executions SET status = v.column2, finished_at = v.column3, \
         output = v.column4, error = v.column5, exit_code = v.column6, \
         signal = v.column7, timed_out = v.column8, interrupted = v.column9, \
         cancel_outcome = v.column10 FROM (",
    );
    q.values(chunk, |t, c| {
        let cols = c.outcome.columns();
        t.bind(c.id)
            .bind(cols.status.as_str())
            .bind(c.finished_at)
            .bind(c.output.as_ref().map(Value::to_string))
            .bind(c.error.as_deref())
            .bind(c.exit_code)
            .bind(c.signal.as_deref())
            .bind(cols.timed_out as i64)
            .bind(cols.interrupted as i64)
            .bind(cols.cancel_outcome);
    });
    // What the end decides on comes packed in one column (see
    // Dialect::JSON_ARRAY), in the field order of `AppliedFacts`.
    q.push(
        ") AS v WHERE executions.id = v.column1 AND executions.status = 'running' \
         RETURNING executions.id AS id, ",
    )
    .push(D::JSON_ARRAY.0)
    .push(
        "executions.attempt, executions.max_attempts, executions.backoff_base_ms, \
         executions.backoff_cap_ms, executions.unique_key, executions.unique_for_ms, \
         executions.cancel_requested_at, executions.after_policy, \
         executions.has_children, executions.handler, executions.started_at, \
         (SELECT j.chain FROM jobs j WHERE j.name = executions.job)",
    )
    .push(D::JSON_ARRAY.1)
    .push(" AS facts");
    let rows = q.fetch_all(conn).await?;
    let applied: HashMap<Uuid, Applied> = SqlStore::<D>::decode(&rows, "executions", |r| {
        let Some(f) = r.json::<AppliedFacts>("facts")? else {
            return Err(corrupt("executions", "facts", "NULL"));
        };
        let chain = match f.chain {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("jobs", "chain", e))?,
            None => Vec::new(),
        };
        let applied = Applied {
            attempt: f.attempt,
            policy: RetryPolicy {
                max_attempts: f.max_attempts,
                backoff_base_ms: f.backoff_base_ms,
                backoff_cap_ms: f.backoff_cap_ms,
            },
            key: f.unique_key,
            hold: f.unique_for_ms,
            cancel_requested: f.cancel_requested_at.is_some(),
            has_parents: f.after_policy.is_some(),
            has_children: f.has_children != 0,
            chain,
            handler: f.handler,
            started_at: f.started_at,
        };
        Ok((r.get("id")?, applied))
    })?
    .into_iter()
    .collect();
    Ok(applied)
}

/// Execution `id` is retried as `retry`: the retry runs after the same
/// parents, and what ran after `id` now runs after the retry (a parent is
/// finished when its last attempt ends).
async fn hand_on_edges<D: Dialect>(
    conn: &mut Conn<D>,
    id: Uuid,
    retry: Uuid,
    has_parents: bool,
) -> Result<(), StoreError> {
    if has_parents {
        Sql::<D>::new(
            "INSERT INTO dependencies (child_id, parent_id) \
             SELECT $2, parent_id FROM dependencies WHERE child_id = $1",
        )
        .bind(id)
        .bind(retry)
        .execute(&mut *conn)
        .await?;
    }
    Sql::<D>::new("UPDATE dependencies SET parent_id = $2 WHERE parent_id = $1")
        .bind(id)
        .bind(retry)
        .execute(conn)
        .await?;
    Ok(())
}

/// Enqueues the jobs chained to executions that ended: `(parent, job,
/// when)`, each a run of `job` after `parent`. A job removed since is
/// passed over. Returns whether any was enqueued.
async fn enqueue_chained<D: Dialect>(
    conn: &mut Conn<D>,
    chained: &[(Uuid, String, Micros)],
) -> Result<bool, StoreError> {
    if chained.is_empty() {
        return Ok(false);
    }
    let mut jobs: HashMap<&str, Option<Job>> = HashMap::new();
    let mut runs = Vec::with_capacity(chained.len());
    for (parent, name, at) in chained {
        if !jobs.contains_key(name.as_str()) {
            let row = Sql::<D>::new("SELECT * FROM jobs WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            let job = row.map(|row| r::<D>(&row, "jobs").job()).transpose()?;
            jobs.insert(name, job);
        }
        let Some(job) = &jobs[name.as_str()] else {
            tracing::warn!(job = %name, %parent, "chained job no longer exists; not enqueued");
            continue;
        };
        let mut run = job.execution(None, *at);
        run.after = vec![*parent];
        run.after_policy = AfterPolicy::Finished;
        runs.push(run);
    }
    let refs: Vec<&NewExecution> = runs.iter().collect();
    let now = crate::model::now_micros();
    insert_executions::<D>(conn, &refs, now, pending).await?;
    let edges: Vec<(Uuid, Uuid)> = runs.iter().map(|r| (r.id, r.after[0])).collect();
    insert_edges::<D>(conn, &edges).await?;
    D::notify(conn, "work").await?;
    Ok(!runs.is_empty())
}

/// Inserts the next attempt of failed execution `id`, a copy of it that
/// `next` says how to run, and links the two.
async fn schedule_retry<D: Dialect>(
    conn: &mut Conn<D>,
    id: Uuid,
    next: crate::model::Retry,
    now: Micros,
    new_id: Uuid,
) -> Result<Uuid, StoreError> {
    Sql::<D>::new(
        "INSERT INTO executions (id, job, handler, mode, payload, status, attempt, \
         max_attempts, backoff_base_ms, backoff_cap_ms, previous_id, timeout_ms, priority, \
         enqueued_at, run_at, queue, unique_key, unique_for_ms, after_policy, workflow_id, \
         step, has_children, concurrency_key, snoozes) \
         SELECT $1, job, handler, mode, payload, 'pending', $2, $3, backoff_base_ms, \
         backoff_cap_ms, id, timeout_ms, priority, $4, $5, queue, unique_key, unique_for_ms, \
         after_policy, workflow_id, step, has_children, concurrency_key, snoozes + $7 \
         FROM executions WHERE id = $6",
    )
    .bind(new_id)
    .bind(next.attempt as i64)
    .bind(next.max_attempts as i64)
    .bind(now)
    .bind(next.run_at)
    .bind(id)
    .bind(next.snooze as i64)
    .execute(conn)
    .await?;
    Sql::<D>::new("UPDATE executions SET next_id = $2 WHERE id = $1")
        .bind(id)
        .bind(new_id)
        .execute(conn)
        .await?;
    Ok(new_id)
}

/// Takes unique key `key` for execution `id`: `None` if it is now `id`'s,
/// or the execution that holds it. The key's row is the lock (its primary
/// key), so two enqueues on any nodes never both take it: the second waits
/// for the first's transaction and then finds the key held.
async fn take_key<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    id: Uuid,
    now: Micros,
) -> Result<Option<Uuid>, StoreError> {
    // The upsert locks the key's row even when it changes nothing, so the
    // holder read next cannot have let go of it meanwhile; the loop is for
    // a key freed between the two all the same.
    loop {
        let taken = Sql::<D>::new(
            "INSERT INTO unique_keys (key, execution_id, held_until) VALUES ($1, $2, NULL) \
             ON CONFLICT (key) DO UPDATE SET execution_id = excluded.execution_id, \
             held_until = NULL \
             WHERE unique_keys.held_until IS NOT NULL AND unique_keys.held_until <= $3 \
             RETURNING execution_id",
        )
        .bind(key)
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let holder = Sql::<D>::new("SELECT execution_id FROM unique_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = holder {
            return Ok(Some(D::get(&row, 0)?));
        }
    }
}

/// What becomes of an ended execution's unique key.
#[derive(Clone, Copy, Debug)]
enum KeyNext {
    /// It passes to the execution's retry.
    Retry(Uuid),
    /// It still counts until then (a throttle).
    Hold(Micros),
    /// It is free.
    Free,
}

/// Hands on or gives up the unique key `key` that execution `id` held. An
/// execution waiting to follow it takes the key over and becomes pending
/// (unless `id` is retried: the retry holds on); returns whether one did.
async fn release_key<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    id: Uuid,
    next: KeyNext,
) -> Result<bool, StoreError> {
    if !matches!(next, KeyNext::Retry(_)) {
        let promoted = Sql::<D>::new(
            "UPDATE unique_keys SET execution_id = next_id, next_id = NULL, held_until = NULL \
             WHERE key = $1 AND execution_id = $2 AND next_id IS NOT NULL RETURNING execution_id",
        )
        .bind(key)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = promoted {
            let successor: Uuid = D::get(&row, 0)?;
            Sql::<D>::new(
                "UPDATE executions SET status = 'pending' WHERE id = $1 AND status = 'waiting'",
            )
            .bind(successor)
            .execute(&mut *conn)
            .await?;
            D::notify(conn, "work").await?;
            return Ok(true);
        }
    }
    let q = Sql::<D>::new(match next {
        KeyNext::Retry(_) => {
            "UPDATE unique_keys SET execution_id = $3 WHERE key = $1 AND execution_id = $2"
        }
        KeyNext::Hold(_) => {
            "UPDATE unique_keys SET held_until = $3 WHERE key = $1 AND execution_id = $2"
        }
        KeyNext::Free => "DELETE FROM unique_keys WHERE key = $1 AND execution_id = $2",
    })
    .bind(key)
    .bind(id);
    let q = match next {
        KeyNext::Retry(retry) => q.bind(retry),
        KeyNext::Hold(until) => q.bind(until),
        KeyNext::Free => q,
    };
    q.execute(conn).await?;
    Ok(false)
}

/// Where an execution's key goes when it ended at `at` (its retry, if any).
fn key_next(retry: Option<Uuid>, hold_ms: Option<i64>, at: Micros) -> KeyNext {
    match (retry, hold_ms) {
        (Some(r), _) => KeyNext::Retry(r),
        (None, Some(ms)) => KeyNext::Hold(at.saturating_add(ms.saturating_mul(1000))),
        (None, None) => KeyNext::Free,
    }
}

/// What a replacing duplicate did.
enum Replaced {
    /// It replaced the payload and due time of this execution.
    Execution(Uuid),
    /// It is to be inserted, waiting to follow the running holder.
    Follow,
    /// Nothing: the holder ended and its key is on hold.
    Nothing,
}

/// A duplicate of `key` with `replace`: the holder's payload and due time
/// if it has not started; else those of the execution waiting to follow
/// it; else `e` is to wait to follow it.
async fn replace<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    holder: Uuid,
    e: &NewExecution,
) -> Result<Replaced, StoreError> {
    let update = |status: &'static str, id: Uuid| {
        Sql::<D>::new(format!(
            "UPDATE executions SET payload = $2, run_at = $3 WHERE id = $1 AND status = '{status}'"
        ))
        .bind(id)
        .bind(e.payload.to_string())
        .bind(e.run_at)
    };
    if update("pending", holder).execute(&mut *conn).await? == 1 {
        return Ok(Replaced::Execution(holder));
    }
    let row = Sql::<D>::new("SELECT next_id, held_until FROM unique_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let next: Option<Uuid> = D::get(&row, 0)?;
    let held_until: Option<Micros> = D::get(&row, 1)?;
    match next {
        Some(follower) => {
            update("waiting", follower).execute(&mut *conn).await?;
            Ok(Replaced::Execution(follower))
        }
        // Ended, and on hold: nothing to replace and nothing to follow.
        None if held_until.is_some() => Ok(Replaced::Nothing),
        None => {
            Sql::<D>::new("UPDATE unique_keys SET next_id = $2 WHERE key = $1")
                .bind(key)
                .bind(e.id)
                .execute(conn)
                .await?;
            Ok(Replaced::Follow)
        }
    }
}
