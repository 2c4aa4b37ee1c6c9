use super::*;
use crate::model::Level;
use crate::model::{Execution, HandlerSpec, Job, LogEntry, Micros};
use async_trait::async_trait;
use uuid::Uuid;

/// What the store tells whoever reads it: executions and their logs, jobs,
/// workflows, queues, handlers, nodes and statistics. An embedding program,
/// the HTTP API and the command line read through it; every write goes
/// through [`crate::Client`] (or [`crate::Supervisor`]), which announces
/// what it did.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// let db = sup.store();
/// // Everything the supervisor records can be read back.
/// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// let e = db.execution(id).await?.unwrap();
/// assert_eq!((e.handler.as_str(), e.attempt), ("noop", 1));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Reads: Send + Sync + 'static {
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

    /// The alerts' incidents open now, oldest first.
    async fn incidents(&self) -> Result<Vec<Incident>, StoreError>;

    /// Webhook `name`.
    async fn webhook(&self, name: &str) -> Result<Option<crate::model::WebhookSpec>, StoreError>;

    /// Every webhook, by name.
    async fn webhooks(&self) -> Result<Vec<crate::model::WebhookSpec>, StoreError>;

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

    /// Which of `ids` name an execution, in any status.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let other = uuid::Uuid::now_v7();
    /// assert_eq!(sup.store().existing_ids(&[id, other]).await?, vec![id]);
    /// # Ok(()) }
    /// ```
    async fn existing_ids(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;

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

    /// Nodes that heartbeat after `since` and have not stopped.
    async fn live_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError>;

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

    /// At most `limit` jobs named after `after` (all, from the first, if
    /// `None`), by name: a page of them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// for name in ["a", "b", "c"] {
    ///     sup.add_job(JobSpec::new(name, "noop", ScheduleSpec::Daemon)).await?;
    /// }
    /// let page = sup.store().jobs_page(Some("a"), 1).await?;
    /// assert_eq!(page[0].spec.name, "b");
    /// # Ok(()) }
    /// ```
    async fn jobs_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Job>, StoreError>;

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
    async fn stuck(&self, now: Micros, stale: Micros) -> Result<Vec<Execution>, StoreError>;

    /// Up to `limit` executions that failed for good at or after `since`
    /// (the last attempt of their chain), the newest first.
    async fn failed_since(&self, since: Micros, limit: usize)
        -> Result<Vec<Execution>, StoreError>;
    /// Jobs not paused whose next occurrence was due before `before`.
    async fn late_jobs(&self, before: Micros) -> Result<Vec<Job>, StoreError>;

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
}
