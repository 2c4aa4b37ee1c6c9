//! Persistence behind one trait, implemented once ([`SqlStore`]) over the
//! SQLite (embedded) and PostgreSQL (multi-node) [`Dialect`]s.

mod dialect;
mod postgres;
mod sql;
mod sqlite;
mod types;

pub use dialect::Dialect;
pub use postgres::Pg;
pub use sql::SqlStore;
pub use sqlite::{sqlite_options, Lite};
pub use types::*;

use crate::model::{
    Enqueued, Execution, HandlerSpec, Job, JobSpec, LogEntry, Micros, NewExecution,
};
use async_trait::async_trait;
use jobvisor_worker::Level;
use std::sync::Arc;
use uuid::Uuid;

/// Errors of the persistence layer.
///
/// ```no_run
/// # async fn demo() {
/// use jobvisor::store::StoreError;
/// match jobvisor::store::open_existing("missing.db").await {
///     Err(StoreError::Missing(path)) => eprintln!("no database at {path}: run `jobvisor migrate`"),
///     Err(e) => eprintln!("cannot open it: {e}"),
///     Ok(_) => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open database {url}")]
    Open {
        /// The URL or path given.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value in {what}")]
    Corrupt {
        /// Which column (`table.column`).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command that only reads found no database where it was pointed
    /// (it never creates one).
    #[error("no database at {0} (`jobvisor serve` or `jobvisor migrate` creates one; --database or JOBVISOR_DATABASE names another)")]
    Missing(String),
    /// An execution to run after does not exist (or, within one enqueue,
    /// comes after its dependent).
    #[error("no execution {0} to run after")]
    NoParent(Uuid),
    /// The URL names no supported database.
    #[error(
        "unsupported database URL {0:?} (expected sqlite://PATH, a file path, or postgres://...)"
    )]
    Unsupported(String),
}

/// What another node tells this one (PostgreSQL LISTEN/NOTIFY): the
/// actors' machinery.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Executions were enqueued or became claimable.
    Work,
    /// A cancel was requested for a running execution.
    Cancel,
    /// Jobs were added or changed.
    Jobs,
    /// A queue's limits changed (the store forgets its cached view of
    /// limits and passes it on as `Work`).
    Limits,
    /// Another process wrote the database (SQLite: its WAL changed and the
    /// writer connection's `data_version` moved): work may be due, cancels
    /// requested, jobs changed; look.
    Changed,
    /// From now on every write by another process is announced as
    /// [`Notice::Changed`] (SQLite: the WAL is watched), so polls may be
    /// rare. When the channel ends, that promise ends with it.
    Watched,
}

/// A table whose rows are known by a UUID.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let store = jobvisor::store::open(&db).await?;
/// use jobvisor::store::IdTable;
/// assert!(store.ids_matching(IdTable::Workflows, "01a23b", 5).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTable {
    /// `executions`.
    Executions,
    /// `workflows`.
    Workflows,
}

/// The store every part of the supervisor talks to.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store();
/// // Everything the supervisor records can be read back.
/// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// let e = store.execution(id).await?.unwrap();
/// assert_eq!((e.handler.as_str(), e.attempt), ("noop", 1));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // The methods marked `doc(hidden)` are the actors' machinery (claims,
    // the relay's writes, node leases, scheduler passes, notices): an
    // embedding program goes through `Supervisor` for those.
    /// Wake-ups from other nodes and processes: PostgreSQL's NOTIFY, or
    /// SQLite's file changes; `None` means: poll only. Lost notices are
    /// found by polling too.
    #[doc(hidden)]
    async fn listen(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<Notice>>, StoreError> {
        Ok(None)
    }

    /// Whether [`Store::publish_events`] reaches other nodes (PostgreSQL).
    #[doc(hidden)]
    fn publishes_events(&self) -> bool {
        false
    }

    /// Sends a batch of lifecycle events (a JSON array of
    /// [`crate::engine::events::Event`], under 8,000 bytes) to every node that
    /// hears them.
    #[doc(hidden)]
    async fn publish_events(&self, payload: &str) -> Result<(), StoreError> {
        let _ = payload;
        Ok(())
    }

    /// Whether a node hears lifecycle events now (one has subscribed, on
    /// PostgreSQL a session holds the hearing lock): publishing is skipped
    /// while none does.
    #[doc(hidden)]
    async fn events_heard(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// From now on, `sink` hears every execution this store cancels before
    /// it started, after the transaction commits (but not those cancelled
    /// in the transaction that inserted them, because an upstream had
    /// already failed: their enqueuer announces them).
    #[doc(hidden)]
    fn on_unstarted_cancels(&self, sink: UnstartedSink) {
        let _ = sink;
    }

    /// Other nodes' lifecycle events, as the JSON batches they published;
    /// `None`: the backend does not carry them.
    #[doc(hidden)]
    async fn listen_events(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<String>>, StoreError> {
        Ok(None)
    }

    /// Brings the schema up to date.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// store.migrate().await?; // `open` migrated already: a no-op
    /// # Ok(()) }
    /// ```
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Adds or replaces a handler.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// use jobvisor::model::{now_micros, HandlerKind, HandlerSpec, Mode, ProcessLimits};
    /// let spec = HandlerSpec {
    ///     name: "hello".into(),
    ///     kind: HandlerKind::Exec { program: "/bin/echo".into(), args: vec!["hi".into()] },
    ///     mode: Mode::Process,
    ///     limits: ProcessLimits::default(),
    /// };
    /// store.put_handler(&spec, now_micros()).await?;
    /// assert_eq!(store.handler("hello").await?, Some(spec));
    /// # Ok(()) }
    /// ```
    async fn put_handler(&self, spec: &HandlerSpec, now: Micros) -> Result<(), StoreError>;
    /// A handler by name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// assert_eq!(store.handler("nope").await?, None); // built-ins are not stored
    /// # Ok(()) }
    /// ```
    async fn handler(&self, name: &str) -> Result<Option<HandlerSpec>, StoreError>;
    /// All handlers, by name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// for h in store.handlers().await? {
    ///     println!("{} ({})", h.name, h.mode);
    /// }
    /// # Ok(()) }
    /// ```
    async fn handlers(&self) -> Result<Vec<HandlerSpec>, StoreError>;
    /// Removes a handler; whether it existed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// assert!(!store.remove_handler("never-added").await?);
    /// # Ok(()) }
    /// ```
    async fn remove_handler(&self, name: &str) -> Result<bool, StoreError>;

    /// Inserts executions (one transaction). One with a unique key that is
    /// held is not inserted: its entry names the holder. One with parents
    /// (`after`, which must come before it if they are in `execs`) waits
    /// until they end, or is cancelled at once if one has already ended
    /// in a way its policy does not allow.
    #[doc(hidden)]
    async fn enqueue(
        &self,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError>;
    /// Inserts a workflow and its steps' executions (one transaction).
    #[doc(hidden)]
    async fn enqueue_workflow(
        &self,
        workflow: &NewWorkflow,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError>;
    /// Workflows, newest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// let spec = jobvisor::workflow::WorkflowSpec::parse(r#"{"name": "w", "steps": [{"name": "a", "handler": "noop"}]}"#)?;
    /// sup.workflow(&spec).await?;
    /// let all = store.workflows(10).await?;
    /// assert_eq!(all[0].name, "w");
    /// # Ok(()) }
    /// ```
    async fn workflows(&self, limit: usize) -> Result<Vec<WorkflowInfo>, StoreError>;
    /// A workflow, its steps as submitted, and the last attempt of each.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// let spec = jobvisor::workflow::WorkflowSpec::parse(r#"{"name": "w", "steps": [{"name": "a", "handler": "noop"}]}"#)?;
    /// let w = sup.workflow(&spec).await?;
    /// let (info, _spec, steps) = store.workflow(w.id).await?.unwrap();
    /// assert_eq!((info.name.as_str(), steps.len()), ("w", 1));
    /// # Ok(()) }
    /// ```
    async fn workflow(
        &self,
        id: Uuid,
    ) -> Result<Option<(WorkflowInfo, serde_json::Value, Vec<Execution>)>, StoreError>;
    /// Cancels every step of a workflow that has not ended: those not
    /// started at once, running ones by their nodes. `None`: no such
    /// workflow.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::model::now_micros;
    /// let spec = jobvisor::workflow::WorkflowSpec::parse(r#"{"name": "w", "steps": [{"name": "a", "handler": "noop"}]}"#)?;
    /// let w = sup.workflow(&spec).await?;
    /// let done = store.cancel_workflow(w.id, "not needed", now_micros()).await?.unwrap();
    /// assert_eq!(done.cancelled, 1);
    /// # Ok(()) }
    /// ```
    async fn cancel_workflow(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<Option<WorkflowCancel>, StoreError>;
    /// Cancels executions `ids` that have not ended: those not started at
    /// once (their dependents settled), running ones by their nodes.
    #[doc(hidden)]
    async fn cancel_many(
        &self,
        ids: &[Uuid],
        reason: &str,
        now: Micros,
    ) -> Result<WorkflowCancel, StoreError>;
    /// Runs a failed or cancelled execution (the last attempt of its chain)
    /// again: a new attempt of the same root, due now, linked to it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::{model::now_micros, store::RetryRequest, Status};
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// // Not ended yet: nothing to retry.
    /// assert_eq!(store.retry(id, now_micros()).await?, RetryRequest::NotEnded(Status::Pending));
    /// # Ok(()) }
    /// ```
    async fn retry(&self, id: Uuid, now: Micros) -> Result<RetryRequest, StoreError>;
    /// What an execution runs after, and what runs after it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::RunSpec;
    /// let first = sup.enqueue(RunSpec::new("echo", serde_json::json!(1))).await?;
    /// let then = sup.enqueue(RunSpec::new("echo", serde_json::json!(2)).after(first)).await?;
    /// assert_eq!(store.links(first).await?.children, [then]);
    /// assert_eq!(store.links(then).await?.parents, [first]);
    /// # Ok(()) }
    /// ```
    async fn links(&self, id: Uuid) -> Result<Links, StoreError>;
    /// The ids of `table`'s rows whose 32 hex digits begin or end with
    /// `hex` (hex digits only, either case), at most `limit`, in order. A
    /// prefix is an index range; a suffix reads every id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::store::IdTable;
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let tail = &id.simple().to_string()[24..];
    /// assert_eq!(store.ids_matching(IdTable::Executions, tail, 2).await?, [id]);
    /// # Ok(()) }
    /// ```
    async fn ids_matching(
        &self,
        table: IdTable,
        hex: &str,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Claims up to `limit` due pending executions for `node`: best priority,
    /// then earliest due.
    #[doc(hidden)]
    async fn claim(&self, node: &str, limit: usize, now: Micros) -> Result<Claims, StoreError>;
    /// Whether any pending execution is due (a cheap read, for idle polls).
    #[doc(hidden)]
    async fn has_due(&self, now: Micros) -> Result<bool, StoreError>;
    /// The earliest due time of any pending execution (a quiet poll sleeps
    /// until then). It reads every pending row: call it when none is due.
    #[doc(hidden)]
    async fn next_run_at(&self) -> Result<Option<Micros>, StoreError>;
    /// Writes a relay batch (logs, progress, pids, completions) in one
    /// transaction; returns what finished, with any retry it scheduled.
    #[doc(hidden)]
    async fn apply(&self, batch: &Batch) -> Result<Vec<Finished>, StoreError>;

    /// One execution.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let e = store.execution(id).await?.expect("just enqueued");
    /// assert_eq!(e.status, jobvisor::Status::Pending);
    /// # Ok(()) }
    /// ```
    async fn execution(&self, id: Uuid) -> Result<Option<Execution>, StoreError>;
    /// Executions, newest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::{store::ExecFilter, Status};
    /// sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let filter = ExecFilter { statuses: vec![Status::Pending], limit: 50, ..Default::default() };
    /// assert_eq!(store.executions(&filter).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    async fn executions(&self, filter: &ExecFilter) -> Result<Vec<Execution>, StoreError>;
    /// Log lines of an execution after `after_seq`, in order, at `min_level`
    /// or above.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// # let mut ended = sup.subscribe();
    /// # let id = sup.enqueue(jobvisor::RunSpec::new("logs", serde_json::json!({"count": 3, "level": "warn"}))).await?;
    /// # while ended.recv().await?.id != id {}
    /// # drop(stop); running.await??;
    /// let lines = store.logs(id, 0, Some(jobvisor::Level::Warn), 100).await?;
    /// assert_eq!(lines.len(), 3);
    /// assert_eq!(lines[0].seq, 1);
    /// # Ok(()) }
    /// ```
    async fn logs(
        &self,
        id: Uuid,
        after_seq: i64,
        min_level: Option<Level>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// A page of an execution's log lines, as `page` says, in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// # let mut ended = sup.subscribe();
    /// # let id = sup.enqueue(jobvisor::RunSpec::new("logs", serde_json::json!({"count": 3, "level": "warn"}))).await?;
    /// # while ended.recv().await?.id != id {}
    /// # drop(stop); running.await??;
    /// use jobvisor::store::LogPage;
    /// let page = LogPage { after_seq: 0, before_seq: None, min_level: None, contains: None, limit: 2, from_end: true, max_bytes: None };
    /// let last_two = store.log_page(id, &page).await?;
    /// assert_eq!(last_two.iter().map(|l| l.seq).collect::<Vec<_>>(), [2, 3]);
    /// # Ok(()) }
    /// ```
    async fn log_page(&self, id: Uuid, page: &LogPage) -> Result<Vec<LogEntry>, StoreError>;
    /// An execution's last `n` log lines, oldest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// # let mut ended = sup.subscribe();
    /// # let id = sup.enqueue(jobvisor::RunSpec::new("logs", serde_json::json!({"count": 3, "level": "warn"}))).await?;
    /// # while ended.recv().await?.id != id {}
    /// # drop(stop); running.await??;
    /// let tail = store.last_logs(id, 1).await?;
    /// assert_eq!(tail[0].seq, 3);
    /// # Ok(()) }
    /// ```
    async fn last_logs(&self, id: Uuid, n: usize) -> Result<Vec<LogEntry>, StoreError>;
    /// Records a cancel request: a pending execution is cancelled at once, a
    /// running one is flagged for its node to stop.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::{model::now_micros, store::CancelRequest};
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let r = store.request_cancel(id, "not needed", now_micros()).await?;
    /// assert_eq!(r, CancelRequest::CancelledPending);
    /// # Ok(()) }
    /// ```
    async fn request_cancel(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<CancelRequest, StoreError>;
    /// Running executions of `node` whose cancel was requested.
    #[doc(hidden)]
    async fn cancel_requests(&self, node: &str) -> Result<Vec<(Uuid, String)>, StoreError>;

    /// Registers a node (a running supervisor).
    #[doc(hidden)]
    async fn register_node(&self, node: &NodeInfo) -> Result<(), StoreError>;
    /// Renews a node's heartbeat.
    #[doc(hidden)]
    async fn heartbeat_node(&self, node: &str, now: Micros) -> Result<(), StoreError>;
    /// Marks a node stopped.
    #[doc(hidden)]
    async fn stop_node(&self, node: &str, now: Micros) -> Result<(), StoreError>;
    /// Nodes that heartbeat after `since` and have not stopped.
    #[doc(hidden)]
    async fn live_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError>;
    /// Running executions that belong to other nodes, with those nodes.
    #[doc(hidden)]
    async fn foreign_running(&self, node: &str) -> Result<Vec<ForeignRunning>, StoreError>;

    /// Changes job `spec.name` to `spec`, keeping its counts and history;
    /// false if there is no such job.
    #[doc(hidden)]
    async fn replace_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError>;
    /// Adds a job; `false` if the name is taken (nothing written).
    #[doc(hidden)]
    async fn insert_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError>;
    /// A job by name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// sup.add_job(JobSpec::new("tick", "noop", ScheduleSpec::Interval { every_ms: 1000, anchor: 0 })).await?;
    /// let job = store.job("tick").await?.unwrap();
    /// assert_eq!((job.spec.handler.as_str(), job.runs), ("noop", 0));
    /// # Ok(()) }
    /// ```
    async fn job(&self, name: &str) -> Result<Option<Job>, StoreError>;
    /// All jobs, by name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// assert!(store.jobs().await?.is_empty());
    /// # Ok(()) }
    /// ```
    async fn jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Deletes a job (its executions stay, as history); whether it existed.
    #[doc(hidden)]
    async fn remove_job(&self, name: &str) -> Result<bool, StoreError>;
    /// Pauses or resumes a job; whether it exists.
    #[doc(hidden)]
    async fn set_job_paused(
        &self,
        name: &str,
        paused: bool,
        now: Micros,
    ) -> Result<bool, StoreError>;
    /// Unpaused, scheduled (not daemon) jobs due at `now`, earliest first.
    #[doc(hidden)]
    async fn due_jobs(&self, now: Micros, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// The earliest `next_run_at` of unpaused jobs.
    #[doc(hidden)]
    async fn next_due(&self) -> Result<Option<Micros>, StoreError>;
    /// Which of `names` have a pending or running execution.
    #[doc(hidden)]
    async fn active_jobs(
        &self,
        names: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError>;
    /// Pending and running executions of a job.
    #[doc(hidden)]
    async fn active_executions(&self, job: &str) -> Result<Vec<Uuid>, StoreError>;
    /// Unpaused, uncompleted daemon jobs with no active execution.
    #[doc(hidden)]
    async fn idle_daemons(&self) -> Result<Vec<IdleDaemon>, StoreError>;
    /// Applies a scheduler pass's steps in one transaction; returns how many
    /// executions were inserted.
    #[doc(hidden)]
    async fn advance_jobs(&self, steps: &[JobAdvance], now: Micros) -> Result<usize, StoreError>;

    /// Queues: those configured and those executions name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let q = store.queues().await?;
    /// assert_eq!((q[0].name.as_str(), q[0].pending), ("default", 1));
    /// # Ok(()) }
    /// ```
    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError>;
    /// Changes a queue's limits (`Some(None)` removes one) or pause state;
    /// every node's next claim applies them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// use jobvisor::store::QueueChange;
    /// let pause = QueueChange { paused: Some(true), ..Default::default() };
    /// store.set_queue("mail", &pause).await?;
    /// assert!(store.queues().await?.iter().any(|q| q.name == "mail" && q.paused));
    /// # Ok(()) }
    /// ```
    async fn set_queue(&self, name: &str, change: &QueueChange) -> Result<(), StoreError>;
    /// Statistics per job (or of one job).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let store = jobvisor::store::open(&db).await?;
    /// assert!(store.stats(Some("nightly")).await?.is_empty());
    /// # Ok(()) }
    /// ```
    async fn stats(&self, job: Option<&str>) -> Result<Vec<JobStats>, StoreError>;
    /// Nodes that heartbeat after `since`, stopped ones too, newest first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// let nodes = store.recent_nodes(jobvisor::model::now_micros() - 60_000_000).await?;
    /// assert!(nodes.iter().any(|n| n.id == sup.node_id()));
    /// # Ok(()) }
    /// ```
    async fn recent_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError>;
    /// Executions that ended in the minute holding `since` or after it,
    /// counted per minute, handler and status, with their durations. Kept
    /// as they end (the timeline table), so it reads a row per minute,
    /// handler and status however many ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// # let mut ended = sup.subscribe();
    /// # let id = sup.enqueue(jobvisor::RunSpec::new("logs", serde_json::json!({"count": 3, "level": "warn"}))).await?;
    /// # while ended.recv().await?.id != id {}
    /// # drop(stop); running.await??;
    /// let rows = store.timeline(jobvisor::model::now_micros() - 3_600_000_000).await?;
    /// assert_eq!((rows[0].handler.as_str(), rows[0].status), ("logs", jobvisor::Status::Succeeded));
    /// # Ok(()) }
    /// ```
    async fn timeline(&self, since: Micros) -> Result<Vec<TimelineRow>, StoreError>;
    /// Running executions past their timeout at `now`, or whose node's
    /// heartbeat is older than `stale`.
    #[doc(hidden)]
    async fn stuck(&self, now: Micros, stale: Micros) -> Result<Vec<Execution>, StoreError>;
    /// Up to `limit` executions that failed at or after `since`, the newest
    /// first.
    #[doc(hidden)]
    async fn failed_since(&self, since: Micros, limit: usize)
        -> Result<Vec<Execution>, StoreError>;
    /// Jobs not paused whose next occurrence was due before `before`.
    #[doc(hidden)]
    async fn late_jobs(&self, before: Micros) -> Result<Vec<Job>, StoreError>;
    /// Deletes up to `limit` finished executions (and their log lines)
    /// that finished before `before`: of job `job` if given, otherwise of
    /// any job but those in `except`. Returns (executions, log lines).
    /// Without `job`, the timeline's minutes before `before` go too.
    #[doc(hidden)]
    async fn prune(
        &self,
        before: Micros,
        job: Option<&str>,
        except: &[String],
        limit: usize,
    ) -> Result<(u64, u64), StoreError>;
    /// Executions per (handler, status).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store();
    /// sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// assert_eq!(store.counts().await?, [("noop".to_string(), "pending".to_string(), 1)]);
    /// # Ok(()) }
    /// ```
    async fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// Names of `kind` (`handler`, `job`) the configuration file declared.
    #[doc(hidden)]
    async fn declared(&self, kind: &str) -> Result<Vec<String>, StoreError>;
    /// Replaces the declared names of `kind`.
    #[doc(hidden)]
    async fn set_declared(&self, kind: &str, names: &[String]) -> Result<(), StoreError>;
}

/// Every handler by name: the registered ones, and the built-ins that no
/// registered handler overrides.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let store = jobvisor::store::open(&db).await?;
/// let all = jobvisor::store::all_handlers(store.as_ref()).await?;
/// assert!(all.iter().any(|h| h.name == "sleep"));
/// # Ok(()) }
/// ```
pub async fn all_handlers(store: &dyn Store) -> Result<Vec<HandlerSpec>, StoreError> {
    let mut all = store.handlers().await?;
    for name in jobvisor_worker::builtins::NAMES {
        if !all.iter().any(|h| h.name == name) {
            all.push(HandlerSpec::builtin(name));
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// The handler registered as `name`, or the built-in of that name.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let store = jobvisor::store::open(&db).await?;
/// let h = jobvisor::store::handler_or_builtin(store.as_ref(), "echo").await?.unwrap();
/// assert_eq!(h.mode, jobvisor::Mode::Inproc);
/// # Ok(()) }
/// ```
pub async fn handler_or_builtin(
    store: &dyn Store,
    name: &str,
) -> Result<Option<HandlerSpec>, StoreError> {
    Ok(match store.handler(name).await? {
        Some(h) => Some(h),
        None if jobvisor_worker::builtins::known(name) => Some(HandlerSpec::builtin(name)),
        None => None,
    })
}

pub(super) fn open_error(url: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        url: redact(url),
        source,
    }
}

/// Opens the database at `url` (`postgres://...`, an `sqlite://` URL or a
/// file path), creating an SQLite file if needed, and migrates it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// let store = jobvisor::store::open(&db).await?; // created and migrated
/// assert!(store.jobs().await?.is_empty());
/// # Ok(()) }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(SqlStore::new(Pg::open(url).await?))
        } else if url.starts_with("sqlite:") || !url.contains("://") {
            Arc::new(SqlStore::new(Lite::open(url).await?))
        } else {
            return Err(StoreError::Unsupported(url.to_string()));
        };
    store.migrate().await?;
    Ok(store)
}

/// Opens an existing database, for commands that only read: an SQLite
/// file that does not exist is [`StoreError::Missing`], never created.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// use jobvisor::store::{open_existing, StoreError};
/// assert!(matches!(open_existing(&db).await, Err(StoreError::Missing(_))));
/// # Ok(()) }
/// ```
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = sqlite_path(url) {
        if !path.is_empty() && path != ":memory:" && !std::path::Path::new(path).exists() {
            return Err(StoreError::Missing(path.to_string()));
        }
    }
    open(url).await
}

/// The file an SQLite URL or path names (`None` for other databases).
fn sqlite_path(url: &str) -> Option<&str> {
    if url.starts_with("sqlite:") {
        let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
        Some(rest.split('?').next().unwrap_or(rest))
    } else if !url.contains("://") {
        Some(url)
    } else {
        None
    }
}

/// `url` without its password, for messages and logs.
///
/// ```
/// assert_eq!(
///     jobvisor::store::redact("postgres://app:secret@db.example/jobs"),
///     "postgres://app:***@db.example/jobs"
/// );
/// ```
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => match base[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..s + 3], &base[at..]),
            None => base.to_string(),
        },
        _ => base.to_string(),
    };
    if let Some(q) = query {
        // libpq takes `password=` (and `sslpassword=`) in the query too.
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://jv:s3cret@db.internal:5432/jobs"),
            "postgres://jv:***@db.internal:5432/jobs"
        );
        assert_eq!(super::redact("postgres://db/jobs"), "postgres://db/jobs");
        assert_eq!(
            super::redact("postgres://jv@db/jobs?sslmode=require&password=s3cret&sslpassword=k"),
            "postgres://jv@db/jobs?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            super::redact("postgres://jv:a@b@db/jobs?password=x"),
            "postgres://jv:***@db/jobs?password=***"
        );
        assert_eq!(super::redact("jobvisor.db"), "jobvisor.db");
    }
}
