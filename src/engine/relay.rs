//! The relay: the one writer that carries everything executions produce
//! (logs, progress, pids, completions) into the store in batches.
//!
//! Senders wait when the channel is full, so a worker that logs faster than
//! the database writes is slowed down (its pipe fills and it blocks) instead
//! of lines being dropped or memory growing. A failed write is retried, never
//! skipped.

use crate::model::{now_micros, ProgressState};
use crate::store::{Batch, Completion, Finished, LogRow, Store};
use jobvisor_worker::protocol::MAX_PROGRESS_DATA;
use jobvisor_worker::Progress;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Messages queued until at most this many are written in one transaction.
const MAX_BATCH: usize = 8192;

/// Bytes of log text queued at most: with lines of up to 1 MiB, a bound on
/// the message count alone would not bound memory.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// What the relay carries.
#[derive(Debug)]
pub enum RelayMsg {
    /// A log line, with the share of the byte budget it holds until written.
    Log(LogRow, OwnedSemaphorePermit),
    /// A progress report (coalesced to the latest values).
    Progress(Uuid, Progress),
    /// The pid of an execution's child.
    Pid(Uuid, i64),
    /// The end of an execution.
    Complete(Completion),
    /// The end of an execution, written already (in its handler's
    /// transaction), with what it finished: announced in order with the
    /// rest.
    Written(Completion, Vec<Finished>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// What a write made ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Executions that can start now (dependents, chained jobs, a retry
    /// due at once, a freed slot).
    Now,
    /// A retry due then (the earliest, if several).
    At(crate::model::Micros),
}

/// A handle to the relay; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    tx: mpsc::Sender<RelayMsg>,
    bytes: Arc<Semaphore>,
    watchers: Arc<Watchers>,
    failing: Arc<Failing>,
}

/// Since when the writer has been trying to write one batch without
/// success (failing, or waiting on a database that does not answer), how
/// many rows it holds, and the last error (`None` between batches).
#[derive(Default)]
struct Failing(std::sync::Mutex<Option<(std::time::Instant, usize, Option<String>)>>);

impl Failing {
    /// A batch of `rows` is being written (again).
    fn writing(&self, rows: usize) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some((std::time::Instant::now(), rows, None));
        }
    }

    fn failed(&self, error: String) {
        if let Some(f) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f.2 = Some(error);
        }
    }

    fn written(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The rows held and why, once one batch has not been written for `d`.
    fn for_at_least(&self, d: Duration) -> Option<(usize, String)> {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .filter(|(since, _, _)| since.elapsed() >= d)
            .map(|(since, rows, error)| {
                let error = error.clone().unwrap_or_else(|| {
                    format!(
                        "the database has not answered for {}s",
                        since.elapsed().as_secs()
                    )
                });
                (*rows, error)
            })
    }
}

/// What [`Relay::flush_or_give_up`] could not write.
#[derive(Debug, thiserror::Error)]
#[error("{rows} rows (logs, progress, results) not written, and whatever was queued behind them: {error}")]
pub struct Unwritten {
    /// The rows of the batch that kept failing.
    pub rows: usize,
    /// The last error.
    pub error: String,
}

/// Who waits to hear that an execution's rows changed (its log, progress
/// or end): the API's event streams, instead of each polling the store.
#[derive(Default)]
struct Watchers(std::sync::Mutex<HashMap<Uuid, Vec<Arc<tokio::sync::Notify>>>>);

impl Watchers {
    /// Wakes the watchers of `ids` (after their rows are committed).
    fn touched(&self, ids: impl Iterator<Item = Uuid>) {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            return;
        }
        for id in ids {
            for n in all.get(&id).into_iter().flatten() {
                n.notify_one();
            }
        }
    }
}

/// A watch on one execution's rows: [`Watch::changed`] completes once a
/// batch that wrote any of them has committed (since the last call).
pub struct Watch {
    id: Uuid,
    notify: Arc<tokio::sync::Notify>,
    watchers: Arc<Watchers>,
}

impl Watch {
    /// Completes when the execution's rows have changed since the last
    /// call (or since the watch began).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut all = self.watchers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = all.get_mut(&self.id) {
            v.retain(|n| !Arc::ptr_eq(n, &self.notify));
            if v.is_empty() {
                all.remove(&self.id);
            }
        }
    }
}

impl Relay {
    /// Starts the writer task. Finished executions are announced on
    /// `finished` after their rows are committed; `ready` is called when a
    /// write made other executions ready now (dependents, chained jobs),
    /// or scheduled a retry for later.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        capacity: usize,
        finished: broadcast::Sender<Finished>,
        ready: Arc<dyn Fn(Ready) + Send + Sync>,
        events: Arc<crate::engine::events::Hub>,
    ) -> (Relay, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let watchers = Arc::new(Watchers::default());
        let failing = Arc::new(Failing::default());
        let task = tokio::spawn(write_loop(
            store,
            rx,
            finished,
            ready,
            events,
            watchers.clone(),
            failing.clone(),
        ));
        let bytes = Arc::new(Semaphore::new(MAX_QUEUED_BYTES));
        (
            Relay {
                tx,
                bytes,
                watchers,
                failing,
            },
            task,
        )
    }

    /// Watches execution `id`'s rows written through this relay.
    ///
    /// ```no_run
    /// # async fn demo(relay: &jobvisor::relay::Relay, id: uuid::Uuid) {
    /// let w = relay.watch(id);
    /// w.changed().await; // a batch with its lines, progress or end committed
    /// # }
    /// ```
    pub fn watch(&self, id: Uuid) -> Watch {
        let notify = Arc::new(tokio::sync::Notify::new());
        self.watchers
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .push(notify.clone());
        Watch {
            id,
            notify,
            watchers: self.watchers.clone(),
        }
    }

    /// Queues a message, waiting while the queue is full.
    ///
    /// ```no_run
    /// # async fn demo(relay: &jobvisor::relay::Relay, id: uuid::Uuid) {
    /// use jobvisor::relay::RelayMsg;
    /// relay.send(RelayMsg::Pid(id, 4242)).await;
    /// # }
    /// ```
    pub async fn send(&self, msg: RelayMsg) {
        // The writer only stops once every Relay handle is dropped.
        let _ = self.tx.send(msg).await;
    }

    /// Queues a log line, waiting while the queue is full or holds too many
    /// bytes.
    ///
    /// ```no_run
    /// # async fn demo(relay: &jobvisor::relay::Relay, row: jobvisor::store::LogRow) {
    /// relay.send_log(row).await; // waits while the queue holds too many bytes
    /// # }
    /// ```
    pub async fn send_log(&self, row: LogRow) {
        let size = stored_size(&row.message, row.fields.as_deref()).min(MAX_QUEUED_BYTES) as u32;
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(size)
            .await
            .expect("the byte budget is never closed");
        self.send(RelayMsg::Log(row, permit)).await;
    }

    /// Messages waiting to be written.
    ///
    /// ```no_run
    /// # fn demo(relay: &jobvisor::relay::Relay) {
    /// if relay.queued() > 10_000 {
    ///     eprintln!("the database is behind");
    /// }
    /// # }
    /// ```
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until everything queued so far is written.
    ///
    /// ```no_run
    /// # async fn demo(relay: &jobvisor::relay::Relay) {
    /// relay.flush().await; // everything sent so far is written
    /// # }
    /// ```
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(RelayMsg::Flush(tx)).await;
        let _ = rx.await;
    }

    /// [`flush`](Self::flush), unless one batch has gone unwritten for
    /// `patience` (its writes fail, or the database does not answer): then
    /// what was not written, and why. A database that is slow but writes
    /// is waited for.
    ///
    /// ```no_run
    /// # async fn demo(relay: &jobvisor::relay::Relay) {
    /// if let Err(e) = relay.flush_or_give_up(std::time::Duration::from_secs(10)).await {
    ///     eprintln!("stopping without writing everything: {e}");
    /// }
    /// # }
    /// ```
    pub async fn flush_or_give_up(&self, patience: Duration) -> Result<(), Unwritten> {
        let flushed = self.flush();
        tokio::pin!(flushed);
        let mut check = tokio::time::interval(Duration::from_millis(100).min(patience));
        loop {
            tokio::select! {
                _ = &mut flushed => return Ok(()),
                _ = check.tick() => {
                    if let Some((rows, error)) = self.failing.for_at_least(patience) {
                        return Err(Unwritten { rows, error });
                    }
                }
            }
        }
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<RelayMsg>,
    finished: broadcast::Sender<Finished>,
    ready: Arc<dyn Fn(Ready) + Send + Sync>,
    events: Arc<crate::engine::events::Hub>,
    watchers: Arc<Watchers>,
    failing: Arc<Failing>,
) {
    let mut progress: HashMap<Uuid, ProgressState> = HashMap::new();
    let mut flushes = Vec::new();
    let mut permits = Vec::new();
    let mut batch = Batch::default();
    let (mut written, mut written_done) = (Vec::new(), Vec::new());
    while let Some(first) = rx.recv().await {
        // Every transaction costs several round trips to SQLite's thread: a
        // short yield lets messages that are being produced right now (a
        // pid, a first line, a burst of completions) join this batch.
        if rx.len() < 64 {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next {
            match msg {
                RelayMsg::Log(l, permit) => {
                    batch.logs.push(l);
                    permits.push(permit);
                }
                RelayMsg::Progress(id, p) => progress.entry(id).or_default().merge(&p),
                RelayMsg::Pid(id, pid) => batch.pids.push((id, pid)),
                RelayMsg::Complete(c) => batch.completions.push(c),
                RelayMsg::Written(c, f) => {
                    written.push(c);
                    written_done.extend(f);
                }
                RelayMsg::Flush(done) => flushes.push(done),
            }
            taken += 1;
            next = if taken < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        batch.progress.extend(progress.drain());
        let mut delay = Duration::from_millis(50);
        let rows =
            batch.logs.len() + batch.progress.len() + batch.pids.len() + batch.completions.len();
        let done = loop {
            if rows > 0 {
                failing.writing(rows);
            }
            match store.apply(&batch).await {
                Ok(done) => {
                    failing.written();
                    break done;
                }
                Err(e) => {
                    let error = crate::error_chain(&e);
                    tracing::error!(
                        error = %error,
                        rows,
                        "relay write failed; retrying (nothing is dropped)"
                    );
                    failing.failed(error);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mut done = done;
        if !written.is_empty() {
            done.append(&mut written_done);
            batch.completions.append(&mut written);
        }
        let ends = crate::engine::events::Ends {
            finished: &done,
            completions: &batch.completions,
        };
        events.written(&batch.progress, ends).await;
        watchers.touched(
            batch
                .logs
                .iter()
                .map(|l| l.execution_id)
                .chain(batch.progress.iter().map(|(id, _)| *id))
                .chain(batch.completions.iter().map(|c| c.id)),
        );
        batch = Batch::default();
        permits.clear();
        if done.iter().any(|f| f.released) {
            ready(Ready::Now);
        }
        let now = now_micros();
        if let Some(at) = done
            .iter()
            .filter_map(|f| f.retry_at)
            .filter(|at| *at > now)
            .min()
        {
            ready(Ready::At(at));
        }
        for f in done {
            let _ = finished.send(f);
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

/// Where one execution's logs and progress go: numbers the lines (from 1)
/// and forwards them to the relay.
#[derive(Clone)]
pub struct LogSink {
    id: Uuid,
    seq: Arc<std::sync::atomic::AtomicI64>,
    relay: Relay,
    /// The execution's log budget, in stored bytes, in every mode.
    budget: Option<Arc<Budget>>,
}

/// What an execution may still store of its log, and what it could not.
#[derive(Debug)]
struct Budget {
    max: u64,
    left: std::sync::atomic::AtomicI64,
    dropped_lines: std::sync::atomic::AtomicU64,
    dropped_bytes: std::sync::atomic::AtomicU64,
}

/// What a stored log line costs beyond its text and fields: its row's
/// execution id, sequence number, time, level and stream, and the index
/// entry that finds it.
pub const LOG_ROW_OVERHEAD: usize = 64;

/// The bytes a log line takes in the store: its message, its fields' JSON
/// and [`LOG_ROW_OVERHEAD`].
///
/// ```
/// assert_eq!(jobvisor::relay::stored_size("hello", None), 5 + jobvisor::relay::LOG_ROW_OVERHEAD);
/// ```
pub fn stored_size(message: &str, fields: Option<&str>) -> usize {
    message.len() + fields.map_or(0, str::len) + LOG_ROW_OVERHEAD
}

impl LogSink {
    /// A sink for execution `id`.
    ///
    /// ```no_run
    /// # fn demo(relay: &jobvisor::relay::Relay, id: uuid::Uuid) {
    /// let sink = jobvisor::relay::LogSink::new(id, relay.clone());
    /// assert_eq!(sink.count(), 0);
    /// # }
    /// ```
    pub fn new(id: Uuid, relay: Relay) -> Self {
        Self {
            id,
            seq: Arc::default(),
            relay,
            budget: None,
        }
    }

    /// The sink with a log budget: lines beyond `max_bytes` of stored size
    /// ([`stored_size`]) are counted, not stored, and
    /// [`LogSink::report_dropped`] says how many. The supervisor's own notes
    /// are not counted.
    ///
    /// ```no_run
    /// # fn demo(relay: &jobvisor::relay::Relay, id: uuid::Uuid) {
    /// let sink = jobvisor::relay::LogSink::new(id, relay.clone()).with_budget(64 << 20);
    /// # }
    /// ```
    pub fn with_budget(mut self, max_bytes: u64) -> Self {
        use std::sync::atomic::{AtomicI64, AtomicU64};
        self.budget = Some(Arc::new(Budget {
            max: max_bytes,
            left: AtomicI64::new(max_bytes.min(i64::MAX as u64) as i64),
            dropped_lines: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        }));
        self
    }

    /// Logs a line at the supervisor's level `warn` if any were not stored
    /// for the budget: `output limit 1.0 MiB reached: N line(s), X, not
    /// stored`.
    ///
    /// ```no_run
    /// # async fn demo(sink: &jobvisor::relay::LogSink) {
    /// sink.report_dropped().await;
    /// # }
    /// ```
    pub async fn report_dropped(&self) {
        use std::sync::atomic::Ordering;
        let Some(b) = &self.budget else {
            return;
        };
        let lines = b.dropped_lines.load(Ordering::Relaxed);
        if lines > 0 {
            self.note(
                jobvisor_worker::Level::Warn,
                format!(
                    "output limit {} reached: {lines} line(s), {}, not stored",
                    crate::model::format_bytes(b.max),
                    crate::model::format_bytes(b.dropped_bytes.load(Ordering::Relaxed))
                ),
            )
            .await;
        }
    }

    /// The relay behind this sink.
    ///
    /// ```no_run
    /// # async fn demo(sink: &jobvisor::relay::LogSink) {
    /// sink.relay().flush().await;
    /// # }
    /// ```
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Lines logged so far.
    ///
    /// ```no_run
    /// # fn demo(sink: &jobvisor::relay::LogSink) {
    /// println!("{} lines so far", sink.count());
    /// # }
    /// ```
    pub fn count(&self) -> i64 {
        self.seq.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs one line.
    ///
    /// ```no_run
    /// # async fn demo(sink: &jobvisor::relay::LogSink) {
    /// sink.log(jobvisor::Level::Info, "stdout", "hello", None).await;
    /// # }
    /// ```
    pub async fn log(
        &self,
        level: jobvisor_worker::Level,
        stream: &'static str,
        message: impl Into<std::borrow::Cow<'_, str>>,
        fields: Option<serde_json::Map<String, serde_json::Value>>,
    ) {
        use std::sync::atomic::Ordering;
        // Borrowed text is copied only once the budget admits it.
        let message = message.into();
        let fields = fields.map(|f| serde_json::Value::Object(f).to_string());
        if let Some(b) = self
            .budget
            .as_ref()
            .filter(|_| stream != crate::model::stream::SUPERVISOR)
        {
            let size = stored_size(&message, fields.as_deref()) as i64;
            if b.left.fetch_sub(size, Ordering::Relaxed) < size {
                b.dropped_lines.fetch_add(1, Ordering::Relaxed);
                b.dropped_bytes.fetch_add(size as u64, Ordering::Relaxed);
                return;
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.relay
            .send_log(LogRow {
                execution_id: self.id,
                seq,
                ts: now_micros(),
                level: level.as_str(),
                stream,
                message: message.into_owned(),
                fields,
            })
            .await;
    }

    /// A note from the supervisor itself.
    ///
    /// ```no_run
    /// # async fn demo(sink: &jobvisor::relay::LogSink) {
    /// sink.note(jobvisor::Level::Warn, "sent SIGTERM to the process group".into()).await;
    /// # }
    /// ```
    pub async fn note(&self, level: jobvisor_worker::Level, message: String) {
        self.log(level, crate::model::stream::SUPERVISOR, message, None)
            .await;
    }

    /// Reports progress.
    ///
    /// ```no_run
    /// # async fn demo(sink: &jobvisor::relay::LogSink) {
    /// sink.progress(jobvisor_worker::Progress { percent: Some(50.0), ..Default::default() }).await;
    /// # }
    /// ```
    pub async fn progress(&self, mut p: Progress) {
        if let Some(data) = &p.data {
            let bytes = serde_json::to_string(data).map_or(usize::MAX, |j| j.len());
            let why = match data {
                Value::Object(_) if bytes <= MAX_PROGRESS_DATA => None,
                Value::Object(_) => Some(format!(
                    "{bytes} bytes: at most {MAX_PROGRESS_DATA} are kept"
                )),
                _ => Some("it is not a JSON object".to_string()),
            };
            if let Some(why) = why {
                p.data = None;
                self.note(
                    jobvisor_worker::Level::Warn,
                    format!("progress data dropped: {why}"),
                )
                .await;
            }
        }
        self.relay.send(RelayMsg::Progress(self.id, p)).await;
    }
}
