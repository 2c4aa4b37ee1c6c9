//! [`Client`]: the one command path. Every command that changes
//! executions, jobs, queues or workflows goes through it, from the CLI, the
//! HTTP API and the library alike, and announces its events once, here.
//!
//! A client is a store and what the commands cause besides their writes:
//! - their events, to whoever hears them (`Announce`): a node's hub, or,
//!   for a program that is not a node (the CLI), a buffer published to the
//!   nodes at the end of each command;
//! - on a node, nudges to its own actors ([`Nudge`]): claim now, look at
//!   the jobs again, stop a running execution at once. Other processes hear
//!   of the writes through the database (a notice, or SQLite's WAL watch).

use crate::bulk::Bulk;
use crate::engine::events::{Announce, Enqueued as Announced};
use crate::model::{now_micros, Enqueued, HandlerSpec, JobSpec, Micros, Status};
use crate::store::{
    AppTransaction, CancelRequest, Database, ExecFilter, HoldRequest, QueueChange, RetryRequest,
    Store, StoreError, UnstartedCancel,
};
use crate::submit::RunSpec;
use crate::workflow::{Submitted, WorkflowSpec};
use crate::Error;
use std::sync::Arc;
use uuid::Uuid;

/// What a command tells the actors of the node it runs on.
pub(crate) trait Nudge: Send + Sync {
    /// This node's id.
    fn node(&self) -> &str;
    /// Work may be due: claim now.
    fn work(&self);
    /// Jobs changed: plan again.
    fn jobs_changed(&self);
    /// Execution `id` is to stop, if it runs here.
    fn stop(&self, id: Uuid, reason: &str);
}

/// The one command path: a store, where the commands' events go, and (on
/// a node) its actors. Cheap to clone.
///
/// A [`Supervisor`](crate::Supervisor) is a client plus its actors (it
/// derefs to one, and [`Supervisor::client`](crate::Supervisor::client)
/// hands one out); [`Client::connect`] makes one for a program that runs
/// no executions, as the CLI does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// let store = jobvisor::store::open(&db).await?;
/// let client = jobvisor::Client::connect(store).await;
/// let id = client.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// // A supervisor on this database runs it.
/// assert_eq!(client.store().execution(id).await?.unwrap().status, jobvisor::Status::Pending);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    db: Database,
    announce: Arc<dyn Announce>,
    nudge: Option<Arc<dyn Nudge>>,
    /// Which handler names this process runs itself (beyond those the
    /// database knows).
    local: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Client {
    /// A client for a program that runs no executions (the CLI): handlers
    /// are the built-ins and those in the database; on PostgreSQL its
    /// events are published to the nodes while one hears.
    pub async fn connect(db: Database) -> Client {
        let origin = format!("cli@{}", crate::engine::runner::os::hostname());
        let announce = crate::engine::events::Announcer::new(db.store().clone(), origin).await;
        Client {
            db,
            announce: Arc::new(announce),
            nudge: None,
            local: Arc::new(jobvisor_worker::builtins::known),
        }
    }

    /// A node's client.
    pub(crate) fn for_node(
        store: Arc<dyn Store>,
        announce: Arc<dyn Announce>,
        nudge: Arc<dyn Nudge>,
        local: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Client {
        Client {
            db: Database::new(store),
            announce,
            nudge: Some(nudge),
            local,
        }
    }

    /// The database, to read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let client = jobvisor::Client::connect(jobvisor::store::open(&db).await?).await;
    /// assert!(client.store().jobs().await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn store(&self) -> &Database {
        &self.db
    }

    fn work(&self) {
        if let Some(n) = &self.nudge {
            n.work();
        }
    }

    fn jobs_changed(&self) {
        if let Some(n) = &self.nudge {
            n.jobs_changed();
        }
    }

    /// Enqueues one run; returns the execution's id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// let mut spec = jobvisor::RunSpec::new("sleep", serde_json::json!({"ms": 50}));
    /// spec.retries = 3;
    /// spec.priority = 10;
    /// let id = sup.enqueue(spec).await?;
    /// assert_eq!(sup.store().execution(id).await?.unwrap().status, jobvisor::Status::Pending);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue(&self, spec: RunSpec) -> Result<Uuid, Error> {
        Ok(self.enqueue_many(vec![spec]).await?[0])
    }

    /// Enqueues several runs in one transaction. For a run whose unique key
    /// is held, nothing is inserted and the id is the holder's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::RunSpec;
    /// let specs = (0..3).map(|i| RunSpec::new("echo", i.into())).collect();
    /// let ids = sup.enqueue_many(specs).await?;
    /// assert_eq!(ids.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_many(&self, specs: Vec<RunSpec>) -> Result<Vec<Uuid>, Error> {
        Ok(self
            .submit_many(specs)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect())
    }

    /// The index of the first of `specs` that is refused on its own (an
    /// unknown handler, a bad field), if one is: which run made a batch
    /// fail.
    pub(crate) async fn first_refused(&self, specs: &[RunSpec]) -> Option<usize> {
        crate::submit::first_refused(self.db.store().as_ref(), &*self.local, specs).await
    }

    /// Like [`Client::enqueue_many`], saying of each run whether it was a
    /// duplicate of a held unique key.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::RunSpec;
    /// let once = || RunSpec::new("noop", serde_json::Value::Null).unique_key("nightly-report");
    /// let out = sup.submit_many(vec![once(), once()]).await?;
    /// assert!(!out[0].duplicate && out[1].duplicate);
    /// assert_eq!(out[0].id, out[1].id);
    /// # Ok(()) }
    /// ```
    pub async fn submit_many(&self, specs: Vec<RunSpec>) -> Result<Vec<Enqueued>, Error> {
        let store = self.db.store().as_ref();
        // Ids the caller chose: each new, and none twice.
        let chosen: Vec<Uuid> = specs.iter().filter_map(|s| s.id).collect();
        if !chosen.is_empty() {
            let mut seen = std::collections::HashSet::with_capacity(chosen.len());
            if let Some(twice) = chosen.iter().find(|id| !seen.insert(**id)) {
                return Err(Error::Invalid(format!("id {twice} is given to two runs")));
            }
            if let Some(taken) = store.existing_ids(&chosen).await?.first() {
                return Err(Error::IdTaken(*taken));
            }
        }
        let execs = crate::submit::prepare_many(store, &*self.local, specs).await?;
        let out = match crate::submit::enqueue(store, &execs).await {
            // A concurrent insert of the same id won the primary key.
            Err(e) if !chosen.is_empty() => match store.existing_ids(&chosen).await?.first() {
                Some(taken) => return Err(Error::IdTaken(*taken)),
                None => return Err(e),
            },
            out => out?,
        };
        let inserted = out
            .iter()
            .zip(&execs)
            .filter(|(o, x)| !o.duplicate && o.id == x.id);
        // Announced before the dispatcher is woken to claim them, so that
        // their `enqueued` comes before their `started`.
        if self.announce.heard() {
            self.announce
                .enqueued(inserted.clone().map(|(_, x)| x.into()).collect());
        }
        self.work();
        // A run whose upstream had already failed was cancelled as it was
        // inserted: announced after its `enqueued`.
        if self.announce.heard() {
            for (_, x) in inserted.filter(|(_, x)| !x.after.is_empty()) {
                if let Ok(Some(e)) = store.execution(x.id).await {
                    if let Some(c) = UnstartedCancel::of(&e) {
                        self.announce.cancelled(&[c]);
                    }
                }
            }
        }
        self.announce.flush().await;
        Ok(out)
    }

    /// Enqueues one run in the application's open transaction `tx`, on the
    /// database this client is on: the run exists only if `tx` commits. A
    /// rollback leaves no trace (no row, no webhook event, no unique key
    /// held), and supervisors hear of the run when `tx` commits
    /// (PostgreSQL's NOTIFY is sent on commit; SQLite's commit changes the
    /// file that they watch).
    ///
    /// `tx` is an sqlx transaction on the client's database, with its
    /// schema (the same URL). On SQLite begin it with `BEGIN IMMEDIATE`
    /// (`conn.begin_with("BEGIN IMMEDIATE")`): a transaction that reads
    /// before it writes cannot take the write lock later if a supervisor
    /// wrote in between. Under PostgreSQL's default READ COMMITTED, a
    /// transaction that fails with a serialization failure (SQLSTATE
    /// 40001, a parent moved between the live and ended partitions) is to
    /// be run again whole, as any other.
    ///
    /// The event stream does not carry these runs' `enqueued` (whether
    /// they will exist is `tx`'s to say); their starts and ends are sent
    /// as any run's, and webhooks record them on commit.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// let client = jobvisor::Client::connect(jobvisor::store::open(&db).await?).await;
    /// // The application's own connection to the same database.
    /// let pool = sqlx::SqlitePool::connect_with(jobvisor::store::sqlite_options(&db)?).await?;
    /// let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    /// sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY)").execute(&mut *tx).await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES (7)").execute(&mut *tx).await?;
    /// let id = client
    ///     .enqueue_in(&mut tx, &jobvisor::RunSpec::new("noop", serde_json::json!({"order": 7})))
    ///     .await?;
    /// tx.rollback().await?;
    /// assert!(client.store().execution(id).await?.is_none()); // never existed
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<T: AppTransaction>(
        &self,
        tx: &mut T,
        spec: &RunSpec,
    ) -> Result<Uuid, Error> {
        Ok(self.enqueue_many_in(tx, std::slice::from_ref(spec)).await?[0])
    }

    /// Enqueues several runs in the application's open transaction `tx`
    /// (see [`Client::enqueue_in`]); returns their ids. For a run whose
    /// unique key is held, nothing is inserted and the id is the
    /// holder's.
    pub async fn enqueue_many_in<T: AppTransaction>(
        &self,
        tx: &mut T,
        specs: &[RunSpec],
    ) -> Result<Vec<Uuid>, Error> {
        let store = self.db.store().as_ref();
        if T::BACKEND != store.backend() {
            return Err(Error::Invalid(format!(
                "a transaction on {} cannot enqueue into this client's {} database",
                T::BACKEND,
                store.backend()
            )));
        }
        let chosen: Vec<Uuid> = specs.iter().filter_map(|s| s.id).collect();
        let mut seen = std::collections::HashSet::with_capacity(chosen.len());
        if let Some(twice) = chosen.iter().find(|id| !seen.insert(**id)) {
            return Err(Error::Invalid(format!("id {twice} is given to two runs")));
        }
        // Looked for first: a failed insert would abort `tx` (PostgreSQL).
        if let Some(taken) = store.existing_ids(&chosen).await?.first() {
            return Err(Error::IdTaken(*taken));
        }
        let execs = crate::submit::prepare_many(store, &*self.local, specs.to_vec()).await?;
        let out = tx
            .enqueue_execs(execs, crate::model::now_micros())
            .await
            .map_err(|e| match (e, chosen.is_empty()) {
                // The primary key: an id the caller chose is taken.
                (StoreError::Query(sqlx::Error::Database(d)), false) if d.is_unique_violation() => {
                    Error::Invalid(format!("an id given to a run is taken: {}", d.message()))
                }
                (e, _) => e.into(),
            })?;
        Ok(out.into_iter().map(|e| e.id).collect())
    }

    /// Inserts a workflow: every step's execution in one transaction, each
    /// waiting for the steps it runs after. Nothing is written if a step
    /// names an unknown handler or step, or the steps form a cycle.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// let spec = jobvisor::workflow::WorkflowSpec::parse(r#"
    ///     name = "etl"
    ///     [[step]]
    ///     name = "extract"
    ///     handler = "echo"
    ///     [[step]]
    ///     name = "load"
    ///     handler = "noop"
    ///     after = ["extract"]
    /// "#)?;
    /// let done = sup.workflow(&spec).await?;
    /// assert_eq!(done.steps.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn workflow(&self, spec: &WorkflowSpec) -> Result<Submitted, Error> {
        let (out, execs) =
            crate::workflow::submit_inserting(self.db.store().as_ref(), &*self.local, spec).await?;
        if self.announce.heard() {
            self.announce
                .enqueued(execs.iter().map(Into::into).collect());
        }
        self.work();
        self.announce.flush().await;
        Ok(out)
    }

    /// Cancels every step of workflow `id` that has not ended (running
    /// ones on this node are told at once); `None`: no such workflow.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// let spec = jobvisor::workflow::WorkflowSpec::parse(
    ///     r#"{"name": "w", "steps": [{"name": "a", "handler": "noop"}]}"#,
    /// )?;
    /// let w = sup.workflow(&spec).await?;
    /// let done = sup.cancel_workflow(w.id, "not needed").await?.unwrap();
    /// assert_eq!(done.cancelled, 1);
    /// # Ok(()) }
    /// ```
    pub async fn cancel_workflow(
        &self,
        id: Uuid,
        reason: &str,
    ) -> Result<Option<crate::store::WorkflowCancel>, Error> {
        let store = self.db.store().as_ref();
        let done = store
            .cancel_workflow(id, reason, crate::model::now_micros())
            .await?;
        self.announce.flush().await;
        let Some(done) = done else {
            return Ok(None);
        };
        self.work();
        if let (Some(nudge), true) = (&self.nudge, done.requested > 0) {
            if let Some((_, _, steps)) = store.workflow(id).await? {
                for e in steps.iter().filter(|e| e.status == Status::Running) {
                    nudge.stop(e.id, reason);
                }
            }
        }
        Ok(Some(done))
    }

    /// Holds a pending or waiting execution: it becomes `held` and is
    /// never claimed until [`Client::release`]d (see [`HoldRequest`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{store::HoldRequest, Status};
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// assert_eq!(sup.hold(id).await?, HoldRequest::Done(Status::Held));
    /// assert_eq!(sup.release(id).await?, HoldRequest::Done(Status::Pending));
    /// # Ok(()) }
    /// ```
    pub async fn hold(&self, id: Uuid) -> Result<HoldRequest, Error> {
        Ok(self.db.store().hold(id, true).await?)
    }

    /// Releases a held execution, back to pending (or waiting, while it
    /// still waits on parents or a unique key's holder). One that is not
    /// held is left as it is; a running or ended one is refused.
    pub async fn release(&self, id: Uuid) -> Result<HoldRequest, Error> {
        let r = self.db.store().hold(id, false).await?;
        if r == HoldRequest::Done(Status::Pending) {
            self.work();
        }
        Ok(r)
    }

    /// Runs a failed or cancelled execution again: a new attempt of the
    /// same root, due now (see [`RetryRequest`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// use jobvisor::store::RetryRequest;
    /// let failed = sup.enqueue(jobvisor::RunSpec::new("fail", serde_json::json!({"retry": false}))).await?;
    /// # let mut ended = sup.subscribe();
    /// # while ended.recv().await?.id != failed {}
    /// match sup.retry(failed).await? {
    ///     RetryRequest::Retried(again) => println!("retried as {again}"),
    ///     other => println!("not retried: {other:?}"),
    /// }
    /// # drop(stop); running.await??;
    /// # Ok(()) }
    /// ```
    pub async fn retry(&self, id: Uuid) -> Result<RetryRequest, Error> {
        // What the new attempt's `enqueued` says is its predecessor's, read
        // before the retry so that it is announced as the retry commits.
        let before = match self.announce.heard() {
            true => self.db.store().execution(id).await.ok().flatten(),
            false => None,
        };
        let now = crate::model::now_micros();
        let r = self.db.store().retry(id, now).await?;
        if let (RetryRequest::Retried(again), Some(e)) = (&r, before) {
            self.announce.enqueued(vec![retried(&e, *again, now)]);
        }
        self.work();
        self.announce.flush().await;
        Ok(r)
    }

    /// Cancels every execution `filter` matches that has not ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::store::ExecFilter;
    /// for _ in 0..3 {
    ///     sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// }
    /// let filter = ExecFilter { handler: Some("noop".into()), ..Default::default() };
    /// let done = sup.cancel_matching(&filter, "draining").await?;
    /// assert_eq!((done.matched, done.cancelled), (3, Some(3)));
    /// # Ok(()) }
    /// ```
    pub async fn cancel_matching(&self, filter: &ExecFilter, reason: &str) -> Result<Bulk, Error> {
        let now = crate::model::now_micros();
        let done = crate::bulk::cancel(self.db.store().as_ref(), filter, reason, now).await?;
        self.announce.flush().await;
        if let (Some(nudge), true) = (&self.nudge, done.requested.unwrap_or(0) > 0) {
            // Those running here stop at once, not at the next cancel poll.
            let running = ExecFilter {
                statuses: vec![Status::Running],
                node: Some(nudge.node().to_string()),
                limit: 100_000,
                clip: None,
                ..filter.clone()
            };
            for e in self.db.store().executions(&running).await? {
                if e.cancel_requested_at.is_some() {
                    nudge.stop(e.id, reason);
                }
            }
        }
        self.work();
        Ok(done)
    }

    /// Retries every execution `filter` matches that can be.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{store::ExecFilter, Status};
    /// let filter = ExecFilter { statuses: vec![Status::Failed], ..Default::default() };
    /// let done = sup.retry_matching(&filter).await?;
    /// assert_eq!(done.matched, 0);
    /// # Ok(()) }
    /// ```
    pub async fn retry_matching(&self, filter: &ExecFilter) -> Result<Bulk, Error> {
        let heard = self.announce.heard();
        let now = crate::model::now_micros();
        let done = crate::bulk::retry_each(self.db.store().as_ref(), filter, now, |e, again| {
            if heard {
                self.announce.enqueued(vec![retried(e, again, now)]);
            }
        })
        .await?;
        self.work();
        self.announce.flush().await;
        Ok(done)
    }

    /// Requests a cancel; a running execution on this node is told at once,
    /// one on another node when that node hears of it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::store::CancelRequest;
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// assert_eq!(sup.cancel(id, "changed my mind").await?, CancelRequest::CancelledPending);
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<CancelRequest, Error> {
        let now = crate::model::now_micros();
        let r = self.db.store().request_cancel(id, reason, now).await?;
        self.announce.flush().await;
        match r {
            CancelRequest::Requested => {
                if let Some(n) = &self.nudge {
                    n.stop(id, reason);
                }
            }
            // Dependents that run however it ended may be ready now.
            CancelRequest::CancelledPending => self.work(),
            _ => {}
        }
        Ok(r)
    }

    /// Adds a job (validated, its handler resolved against this process's
    /// handlers and the database); returns its first due time (`None` for
    /// a daemon). A node's scheduler hears of it at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// let every_minute = JobSpec::new("tick", "noop", ScheduleSpec::Cron {
    ///     expr: "* * * * *".into(),
    ///     tz: "UTC".into(),
    /// });
    /// let first = sup.add_job(every_minute).await?.unwrap();
    /// assert!(first > jobvisor::model::now_micros() - 60_000_000);
    /// # Ok(()) }
    /// ```
    pub async fn add_job(&self, spec: JobSpec) -> Result<Option<Micros>, Error> {
        crate::job::refuse_declared(self.db.store().as_ref(), &spec.name).await?;
        crate::job::check_chains(self.db.store().as_ref(), &spec).await?;
        let first = crate::job::add(self.db.store().as_ref(), &*self.local, spec).await?;
        self.jobs_changed();
        Ok(first)
    }

    /// Replaces job `spec.name` (it must exist); returns its next due time.
    /// With `keep_anchor`, an interval keeps the old job's anchor (the
    /// new spec gave no start of its own). A paused job stays paused.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// let hourly = || JobSpec::new("sync", "noop", ScheduleSpec::Interval { every_ms: 3_600_000, anchor: 0 });
    /// sup.add_job(hourly()).await?;
    /// let mut changed = hourly();
    /// changed.retries = 3;
    /// sup.replace_job(changed, true).await?;
    /// assert_eq!(sup.store().job("sync").await?.unwrap().spec.retries, 3);
    /// # Ok(()) }
    /// ```
    pub async fn replace_job(
        &self,
        mut spec: JobSpec,
        keep_anchor: bool,
    ) -> Result<Option<Micros>, Error> {
        let Some(old) = self.db.store().job(&spec.name).await? else {
            return Err(Error::UnknownJob(spec.name));
        };
        crate::job::refuse_declared(self.db.store().as_ref(), &spec.name).await?;
        crate::job::check_chains(self.db.store().as_ref(), &spec).await?;
        if keep_anchor {
            crate::job::keep_anchor(&mut spec, &old.spec);
        }
        spec.paused |= old.spec.paused;
        let next = crate::job::replace(self.db.store().as_ref(), &*self.local, spec).await?;
        self.jobs_changed();
        Ok(next)
    }

    /// Removes a job; its history stays.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// sup.add_job(JobSpec::new("tick", "noop", ScheduleSpec::Daemon)).await?;
    /// sup.remove_job("tick").await?;
    /// assert!(sup.store().job("tick").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn remove_job(&self, name: &str) -> Result<(), Error> {
        crate::job::refuse_declared(self.db.store().as_ref(), name).await?;
        crate::job::remove(self.db.store().as_ref(), name).await?;
        self.announce.flush().await;
        self.jobs_changed();
        Ok(())
    }

    /// Runs job `name` now, outside its schedule; returns the execution.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// sup.add_job(JobSpec::new("report", "noop", ScheduleSpec::Cron { expr: "0 7 * * *".into(), tz: "UTC".into() })).await?;
    /// let id = sup.trigger_job("report").await?;
    /// assert_eq!(sup.store().execution(id).await?.unwrap().job.as_deref(), Some("report"));
    /// # Ok(()) }
    /// ```
    pub async fn trigger_job(&self, name: &str) -> Result<Uuid, Error> {
        let run = crate::job::trigger_inserting(self.db.store().as_ref(), name).await?;
        if self.announce.heard() {
            self.announce.enqueued(vec![(&run).into()]);
        }
        self.work();
        self.announce.flush().await;
        Ok(run.id)
    }

    /// Registers handler `spec`, replacing one of the same name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::model::{HandlerKind, HandlerSpec, Mode};
    /// let mut spec = HandlerSpec::builtin("thumbnail");
    /// spec.kind = HandlerKind::Exec { program: "/usr/bin/convert".into(), args: vec![] };
    /// spec.mode = Mode::Process;
    /// sup.add_handler(&spec).await?;
    /// assert!(sup.store().handler("thumbnail").await?.is_some());
    /// assert!(sup.remove_handler("thumbnail").await?);
    /// # Ok(()) }
    /// ```
    pub async fn add_handler(&self, spec: &HandlerSpec) -> Result<(), Error> {
        crate::model::refuse_webhook_handler(&spec.name).map_err(Error::Invalid)?;
        crate::model::check_name("handler name", &spec.name).map_err(Error::Invalid)?;
        Ok(self.db.store().put_handler(spec, now_micros()).await?)
    }

    /// Adds webhook `spec`; with `replace`, one of the same name is
    /// changed (without, it is refused: [`Error::WebhookExists`]). A
    /// webhook the configuration file declares is changed there only.
    /// From the next change of any execution, events it hears are
    /// delivered.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::model::WebhookSpec;
    /// let hook = WebhookSpec::new("oncall", "https://alerts.example.com/hook", &["failed"]);
    /// sup.add_webhook(&hook, false).await?;
    /// assert!(matches!(sup.add_webhook(&hook, false).await, Err(jobvisor::Error::WebhookExists(_))));
    /// assert_eq!(sup.store().webhooks().await?, [hook]);
    /// assert!(sup.remove_webhook("oncall").await?);
    /// # Ok(()) }
    /// ```
    pub async fn add_webhook(
        &self,
        spec: &crate::model::WebhookSpec,
        replace: bool,
    ) -> Result<(), Error> {
        spec.check().map_err(Error::Invalid)?;
        let store = self.db.store();
        refuse_declared_webhook(store.as_ref(), &spec.name).await?;
        if !replace && store.webhook(&spec.name).await?.is_some() {
            return Err(Error::WebhookExists(spec.name.clone()));
        }
        match store.put_webhook(spec, now_micros()).await? {
            crate::store::WebhookPut::Full => Err(Error::Invalid(format!(
                "there are {} webhooks already: remove one first",
                crate::model::MAX_WEBHOOKS
            ))),
            _ => Ok(()),
        }
    }

    /// Removes webhook `name`; `false` if there was none. Deliveries it
    /// made already stay, and fail when they run (there is nowhere to
    /// deliver to).
    pub async fn remove_webhook(&self, name: &str) -> Result<bool, Error> {
        let store = self.db.store();
        refuse_declared_webhook(store.as_ref(), name).await?;
        Ok(store.remove_webhook(name).await?)
    }

    /// Removes the handler registered as `name`; `false` if none was.
    /// Jobs that name it stay (pause them: they fail to run without it).
    pub async fn remove_handler(&self, name: &str) -> Result<bool, Error> {
        Ok(self.db.store().remove_handler(name).await?)
    }

    /// Pauses job `name`: no occurrence comes due until it is resumed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    /// sup.add_job(JobSpec::new("tick", "noop", ScheduleSpec::Cron { expr: "* * * * *".into(), tz: "UTC".into() })).await?;
    /// sup.pause_job("tick").await?;
    /// assert!(sup.store().job("tick").await?.unwrap().spec.paused);
    /// sup.resume_job("tick").await?;
    /// assert!(!sup.store().job("tick").await?.unwrap().spec.paused);
    /// # Ok(()) }
    /// ```
    pub async fn pause_job(&self, name: &str) -> Result<(), Error> {
        crate::job::pause(self.db.store().as_ref(), name).await?;
        self.jobs_changed();
        Ok(())
    }

    /// Resumes job `name` (see [`Client::pause_job`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// assert!(sup.resume_job("no-such-job").await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn resume_job(&self, name: &str) -> Result<(), Error> {
        crate::job::resume(self.db.store().as_ref(), name).await?;
        self.jobs_changed();
        Ok(())
    }

    /// Changes queue `name`'s settings (creating it if need be); what is
    /// held by a limit may be claimable now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// use jobvisor::store::QueueChange;
    /// sup.set_queue("mail", &QueueChange { limit: Some(Some(4)), ..Default::default() }).await?;
    /// let q = sup.store().queues().await?.into_iter().find(|q| q.name == "mail").unwrap();
    /// assert_eq!(q.max_running, Some(4));
    /// # Ok(()) }
    /// ```
    pub async fn set_queue(&self, name: &str, change: &QueueChange) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::Invalid("a queue name cannot be empty".into()));
        }
        crate::model::check_name("queue name", name).map_err(Error::Invalid)?;
        for (what, limit) in [("limit", change.limit), ("key limit", change.key_limit)] {
            if limit == Some(Some(0)) {
                return Err(Error::Invalid(format!(
                    "a queue's {what} must be at least 1"
                )));
            }
        }
        if let Some(Some(rate)) = change.rate {
            rate.check().map_err(|e| Error::Invalid(e.to_string()))?;
        }
        self.db.store().set_queue(name, change).await?;
        self.work();
        Ok(())
    }
}

/// The `enqueued` of `again`, the new attempt of `e` that a retry by hand
/// inserted (due at `run_at`, in `e`'s queue).
fn retried(e: &crate::model::Execution, again: Uuid, run_at: Micros) -> Announced {
    Announced {
        id: again,
        run_at,
        ..e.into()
    }
}

/// Refuses to change webhook `name` if the configuration file declares it.
async fn refuse_declared_webhook(store: &dyn crate::store::Store, name: &str) -> Result<(), Error> {
    if !store.declared("webhook").await?.iter().any(|n| n == name) {
        return Ok(());
    }
    let file = store.declared(crate::job::DECLARING_FILE).await?.pop();
    Err(Error::Invalid(format!(
        "webhook {name:?} is declared in the configuration file{}: change it there and reload the service",
        file.map(|f| format!(" {f}")).unwrap_or_default()
    )))
}
