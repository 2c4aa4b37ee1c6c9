//! The store, written once: every statement is the same text on SQLite and
//! PostgreSQL (integers are 64-bit, flags 0/1, ids UUIDs, JSON as text), and
//! the few words that differ come from the [`Dialect`]. One file per
//! concern: each role's interface (`reads`, `commands`, `engine`), and what
//! they share (`enqueue`, `claim`, `ends`, `cancel`, `limits`, `fields`).

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

mod app;
mod cancel;
mod claim;
mod commands;
mod ends;
mod engine;
mod enqueue;
mod fields;
mod keys;
mod limits;
mod reads;
mod tally;
mod webhooks;

pub(super) use self::app::enqueue_app;
use self::claim::claim_limited;
use self::claim::claim_simple;
use self::fields::Fields;
use self::limits::CachedLimits;
use self::limits::Kinds;
use super::dialect::{Col, Column, Conn, DbRow, Dialect, Sql};
use super::{
    AlertFacts, Batch, CancelRequest, Change, Claimed, Claims, Completion, DecideAlerts, Deliver,
    Delivery, ExecFilter, Finished, ForeignRunning, HoldRequest, IdTable, IdleDaemon, Incident,
    JobAdvance, JobFacts, JobStats, Links, LogPage, NewWorkflow, NodeInfo, Notice, QueueChange,
    QueueInfo, RetryRequest, StoreError, TimelineRow, UnstartedCancel, UnstartedSink, WebhookPut,
    WorkflowCancel, WorkflowInfo,
};
use super::{Commands, Engine, Reads};

use self::tally::next_shard;
use self::tally::EndTally;

use crate::model::Level;
use crate::model::{
    after_end, key_next, now_micros, settle_child, settle_condition, AfterPolicy, ChildStep,
    ConditionEnd, EndFacts, Enqueued, Execution, HandlerSpec, Job, JobSpec, KeyNext, LogEntry,
    Micros, Mode, NewExecution, ProgressState, RetryPolicy, Status, Timestamp,
};
use crate::schedule::ScheduleSpec;
use async_trait::async_trait;
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

/// A worker's text as stored: each NUL as U+FFFD. PostgreSQL's text cannot
/// hold NUL and refuses the whole statement (the relay's batch, and with
/// it every end behind it); SQLite stores the same, so both read alike.
pub(super) fn stored_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// A meta map or a tag list as its stored JSON text.
pub(super) fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("labels serialize")
}

/// Runs `op` again, a few times, while PostgreSQL fails it with a
/// serialization failure (SQLSTATE 40001). `executions` is partitioned
/// there (live and ended), and an end moves a row from one partition to
/// the other: a transaction that waited on that row's lock (a cancel, the
/// claim, an enqueue locking its parent) is then failed rather than shown
/// the moved row, and its statements have to be run again to see it.
/// Each `op` is one whole transaction, rolled back when it fails.
pub(super) async fn retry_moved<T, Fut>(mut op: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0u32;
    loop {
        match op().await {
            Err(e) if tries < 8 && e.is_serialization_failure() => {
                tries += 1;
                tracing::debug!(tries, "a row moved under a transaction; running it again");
                tokio::time::sleep(Duration::from_millis(u64::from(tries))).await;
            }
            r => return r,
        }
    }
}

impl<D: Dialect> SqlStore<D> {
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
        f: impl Fn(&Fields<'_, D>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        rows.iter()
            .map(|row| f(&Fields::<D>::new(row, table)))
            .collect()
    }

    pub(super) async fn read_all(&self, q: Sql<'_, D>) -> Result<Vec<DbRow<D>>, StoreError> {
        q.fetch_all(&mut *self.db.reader().acquire().await?).await
    }

    pub(super) async fn read_one(&self, q: Sql<'_, D>) -> Result<Option<DbRow<D>>, StoreError> {
        q.fetch_optional(&mut *self.db.reader().acquire().await?)
            .await
    }

    /// The first column of the first row.
    pub(super) async fn read_scalar<T: Col>(&self, q: Sql<'_, D>) -> Result<T, StoreError> {
        let row = self.read_one(q).await?;
        Ok(D::get(row.as_ref().ok_or(sqlx::Error::RowNotFound)?, 0)?)
    }

    pub(super) async fn write(&self, q: Sql<'_, D>) -> Result<u64, StoreError> {
        q.execute(&mut *self.db.writer().acquire().await?).await
    }

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, D::Db>, StoreError> {
        Ok(self.db.writer().begin_with(D::BEGIN).await?)
    }

    /// Adds what `tx` ended to the timeline, last, and commits.
    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'static, D::Db>,
        mut ends: EndTally,
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

    /// A job was added, changed or removed: other nodes' schedulers look.
    pub(super) async fn jobs_changed(&self) -> Result<(), StoreError> {
        self.limits_changed();
        Ok(D::notify(&mut *self.db.writer().acquire().await?, "jobs").await?)
    }
}
