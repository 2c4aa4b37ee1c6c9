//! The supervisor: a [`Client`] plus a handle on three actors that each own
//! their state and talk through messages (see `engine/`): the dispatcher
//! (claims and runs executions), the scheduler (turns due jobs into
//! executions) and maintenance (heartbeats, cancels from the database,
//! rescue, notices). `run_until` starts them, joins them, and stops the
//! supervisor cleanly should one of them panic. Its settings are
//! [`Config`] (`config.rs`), its builder [`SupervisorBuilder`]
//! (`builder.rs`).

use crate::client::Client;
use crate::engine::dispatch::{Dispatcher, Executor};
use crate::engine::events::{Event, Hook, Hub};
use crate::engine::maintenance::{self, Maintenance};
use crate::engine::relay::{Ready, Relay, RelayMsg};
use crate::engine::runner::os;
use crate::engine::runner::pool::Pools;
use crate::engine::scheduler::Scheduler;
use crate::engine::{tell_or_drop, ToDispatcher, ToMaintenance, ToScheduler, Vitals};
use crate::model::{now_micros, Micros, Outcome};
use crate::store::{self, Completion, Database, Finished, NodeInfo, Store};
use crate::Error;
use jobvisor_worker::Registry;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

mod builder;
mod config;

pub use builder::SupervisorBuilder;
pub use config::Config;

/// The actors, built with the supervisor and started by `run_until`.
struct Actors {
    dispatcher: Dispatcher,
    scheduler: Scheduler,
    maintenance: Maintenance,
}

/// An actor of the supervisor (named in [`crate::Error::Panicked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Claims and runs executions.
    Dispatcher,
    /// Turns due jobs into executions.
    Scheduler,
    /// Heartbeats, cancels, rescue.
    Maintenance,
    /// Turns the changes the store recorded into webhook deliveries.
    Webhooks,
}

struct Shared {
    db: Database,
    node: NodeInfo,
    exec: Arc<Executor>,
    finished: broadcast::Sender<Finished>,
    vitals: Arc<Vitals>,
    /// How long a node may miss heartbeats before it counts as gone.
    node_lease: Duration,
    /// Set once `run` is listening and dispatching.
    ready: tokio::sync::watch::Sender<bool>,
    dispatcher: mpsc::Sender<ToDispatcher>,
    scheduler: mpsc::Sender<ToScheduler>,
    maintenance: mpsc::Sender<ToMaintenance>,
    /// Taken by the one `run_until`.
    actors: Mutex<Option<Actors>>,
    /// How many executions this node runs at once (its dispatcher reads it).
    concurrency: Arc<std::sync::atomic::AtomicUsize>,
    /// The commands, with this node's actors told.
    client: Client,
}

/// A supervisor node. Cheap to clone: clones are handles on one node.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// use jobvisor::{RunSpec, Status};
/// let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// let id = sup.enqueue(RunSpec::new("echo", serde_json::json!({"hi": 1}))).await?;
/// // Run until the execution has ended.
/// let mut ended = sup.subscribe();
/// let stop = async {
///     while let Ok(f) = ended.recv().await {
///         if f.id == id { break; }
///     }
/// };
/// sup.run(stop).await?;
/// let e = sup.store().execution(id).await?.unwrap();
/// assert_eq!((e.status, e.output), (Status::Succeeded, Some(serde_json::json!({"hi": 1}))));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

impl std::ops::Deref for Supervisor {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.shared.client
    }
}

/// The most executions a node may run at once.
pub const MAX_CONCURRENCY: usize = 100_000;

/// What this node's commands tell its actors.
struct NodeNudge {
    node: String,
    dispatcher: mpsc::Sender<ToDispatcher>,
    scheduler: mpsc::Sender<ToScheduler>,
}

impl crate::client::Nudge for NodeNudge {
    fn node(&self) -> &str {
        &self.node
    }

    fn work(&self) {
        tell_or_drop(&self.dispatcher, ToDispatcher::Wake);
    }

    fn jobs_changed(&self) {
        tell_or_drop(&self.scheduler, ToScheduler::JobsChanged);
        // A job's cap may have risen: held executions may be claimable.
        tell_or_drop(&self.dispatcher, ToDispatcher::Look);
    }

    fn stop(&self, id: Uuid, reason: &str) {
        let reason = reason.to_string();
        tell_or_drop(&self.dispatcher, ToDispatcher::Cancel { id, reason });
    }
}

/// Mailbox size of each actor.
const MAILBOX: usize = 1024;

/// How long a stopping supervisor waits for its scheduler and maintenance
/// to stop (they stop at once unless a database call hangs).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// How long a stopping supervisor keeps trying its last writes while they
/// fail (a database that is slow but answers is waited for).
const FINAL_PATIENCE: Duration = Duration::from_secs(10);

impl Supervisor {
    /// A builder with the built-in handlers registered (the test
    /// built-ins too where [`Config::test_builtins`] says so, `misbehave`
    /// in-process only where [`MISBEHAVE_INPROC_ENV`] is set as well: its
    /// faults would take the supervisor down).
    ///
    /// [`MISBEHAVE_INPROC_ENV`]: jobvisor_worker::builtins::MISBEHAVE_INPROC_ENV
    ///
    /// ```
    /// let builder = jobvisor::Supervisor::builder(); // built-ins registered
    /// ```
    pub fn builder() -> SupervisorBuilder {
        let registry = Registry::with_builtins();
        SupervisorBuilder {
            config: Config::default(),
            registry,
            hooks: Vec::new(),
        }
    }

    /// A supervisor over an open store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// let store = jobvisor::store::open(&db).await?;
    /// let registry = jobvisor::Registry::with_builtins();
    /// let sup = jobvisor::Supervisor::with_store(store, registry, jobvisor::Config::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_store(
        db: Database,
        registry: Registry,
        config: Config,
    ) -> Result<Supervisor, Error> {
        Self::with_parts(db, registry, config, Vec::new()).await
    }

    pub(super) async fn with_parts(
        db: Database,
        registry: Registry,
        config: Config,
        hooks: Vec<Hook>,
    ) -> Result<Supervisor, Error> {
        let store = db.store().clone();
        let mut registry = with_test_builtins(registry, &config);
        {
            let (store, client) = (store.clone(), crate::engine::webhooks::post::client());
            registry.register(
                crate::model::WEBHOOK_HANDLER,
                move |ctx, payload: serde_json::Value| {
                    crate::engine::webhooks::post::post(store.clone(), client.clone(), ctx, payload)
                },
            );
        }
        let now = now_micros();
        let node = node_info(&config, now);
        store.register_node(&node).await?;
        let events = Hub::start(node.id.clone(), store.clone(), hooks);
        if config.cgroups {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!("{}", crate::engine::runner::cgroup::detect().describe())
            });
        }
        let (finished, _) = broadcast::channel(4096);
        let (to_dispatcher, dispatcher_inbox) = mpsc::channel(MAILBOX);
        let relay = start_relay(&store, &config, &finished, &to_dispatcher, &events);
        maintenance::rescue(store.as_ref(), &node, config.node_lease, &relay).await?;
        let pools = Arc::new(Pools::default());
        let exec = Arc::new(executor(&config, &store, &relay, registry, &pools, &events));
        let vitals = Arc::new(Vitals::new(now));
        let (to_scheduler, scheduler_inbox) = mpsc::channel(MAILBOX);
        let (to_maintenance, maintenance_inbox) = mpsc::channel(MAILBOX);
        let concurrency = Arc::new(std::sync::atomic::AtomicUsize::new(config.concurrency));
        let actors = Actors {
            dispatcher: Dispatcher {
                store: store.clone(),
                node: node.id.clone(),
                concurrency: concurrency.clone(),
                claim_batch: config.claim_batch,
                poll_interval: config.poll_interval,
                drain_timeout: config.drain_timeout,
                inbox: dispatcher_inbox,
                vitals: vitals.clone(),
                exec: exec.clone(),
                running: Default::default(),
                tasks: Default::default(),
            },
            scheduler: Scheduler {
                store: store.clone(),
                inbox: scheduler_inbox,
                finished: finished.subscribe(),
                dispatcher: to_dispatcher.clone(),
                poll_cap: config.schedule_poll_interval,
                vitals: vitals.clone(),
                planner: Default::default(),
                events: events.clone(),
            },
            maintenance: Maintenance {
                store: store.clone(),
                node: node.clone(),
                relay,
                pools,
                vitals: vitals.clone(),
                inbox: maintenance_inbox,
                dispatcher: to_dispatcher.clone(),
                scheduler: to_scheduler.clone(),
                cancel_poll: config.cancel_poll_interval,
                heartbeat: config.heartbeat_interval.min(config.node_lease / 4),
                lease: config.node_lease,
                trim_when_idle: config.trim_when_idle,
            },
        };
        let nudge = NodeNudge {
            node: node.id.clone(),
            dispatcher: to_dispatcher.clone(),
            scheduler: to_scheduler.clone(),
        };
        let local = {
            let exec = exec.clone();
            Arc::new(move |name: &str| exec.registry.get(name).is_some())
        };
        let client = Client::for_node(store.clone(), events, Arc::new(nudge), local);
        Ok(Supervisor {
            shared: Arc::new(Shared {
                client,
                db,
                node,
                exec,
                finished,
                vitals,
                node_lease: config.node_lease,
                ready: tokio::sync::watch::channel(false).0,
                dispatcher: to_dispatcher,
                scheduler: to_scheduler,
                maintenance: to_maintenance,
                actors: Mutex::new(Some(actors)),
                concurrency,
            }),
        })
    }

    /// The database, to read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// let handlers = sup.store().handlers().await?; // those `handler add` stored
    /// assert!(handlers.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn store(&self) -> &Database {
        &self.shared.db
    }

    /// This node's id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// println!("this node is {}", sup.node_id());
    /// # Ok(()) }
    /// ```
    pub fn node_id(&self) -> &str {
        &self.shared.node.id
    }

    /// How long a node may miss heartbeats before it counts as gone (and
    /// its running executions are rescued).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// assert_eq!(sup.node_lease(), jobvisor::Config::default().node_lease);
    /// # Ok(()) }
    /// ```
    pub fn node_lease(&self) -> Duration {
        self.shared.node_lease
    }

    /// Gives up a node that never ran (its start failed): marks it stopped,
    /// so that it does not look silent, and removes its cgroup.
    pub(crate) async fn abandon(&self) {
        let store = self.shared.db.store();
        if let Err(e) = store.stop_node(&self.shared.node.id, now_micros()).await {
            tracing::warn!(error = %crate::error_chain(&e), "could not mark the node stopped");
        }
        crate::engine::runner::cgroup::release();
    }

    /// How many executions this node runs at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// let sup = jobvisor::Supervisor::builder().database(&db).configure(|c| c.concurrency = 4).build().await?;
    /// assert_eq!(sup.concurrency(), 4);
    /// sup.set_concurrency(8).await?;
    /// assert_eq!(sup.concurrency(), 8);
    /// # Ok(()) }
    /// ```
    pub fn concurrency(&self) -> usize {
        self.shared
            .concurrency
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes how many executions this node runs at once, until it stops
    /// (the config file's `concurrency` is read again at the next start, or
    /// on a reload). An increase claims more at once; a decrease interrupts
    /// nothing: the node claims less until enough of what runs has ended.
    /// The node's row says the new figure (`GET /v1/nodes`). At least 1, at
    /// most [`MAX_CONCURRENCY`].
    pub async fn set_concurrency(&self, concurrency: usize) -> Result<(), Error> {
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::Invalid(format!(
                "concurrency {concurrency}: give 1 to {MAX_CONCURRENCY}"
            )));
        }
        self.shared
            .db
            .store()
            .set_node_concurrency(&self.shared.node.id, concurrency as u32)
            .await?;
        let before = self
            .shared
            .concurrency
            .swap(concurrency, std::sync::atomic::Ordering::Relaxed);
        if before != concurrency {
            tracing::info!(from = before, to = concurrency, "concurrency changed");
        }
        if concurrency > before {
            tell_or_drop(&self.shared.dispatcher, ToDispatcher::Wake);
        }
        Ok(())
    }

    /// Announces every execution that ends (after its row is written).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// let mut ended = sup.subscribe();
    /// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// let f = loop {
    ///     let f = ended.recv().await?;
    ///     if f.id == id { break f; }
    /// };
    /// assert_eq!(f.status, jobvisor::Status::Succeeded);
    /// # drop(stop); running.await??;
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<Finished> {
        self.shared.finished.subscribe()
    }

    /// Runs until `shutdown` completes; then lets running executions finish
    /// for up to [`Config::drain_timeout`], stops the rest (recorded as
    /// interrupted, so they run again), writes everything out and
    /// deregisters the node.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), jobvisor::Error> {
    /// let sup = jobvisor::Supervisor::builder().database("jobs.db").build().await?;
    /// sup.run(async {
    ///     tokio::signal::ctrl_c().await.ok();
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// Like [`Supervisor::run`], with a drain: after `shutdown`, running
    /// executions get up to [`Config::drain_timeout`] to finish; `force`
    /// (a second signal) cuts the wait short.
    ///
    /// Should an actor panic, the supervisor stops as at `shutdown` (what
    /// runs is interrupted, to run again) and returns
    /// [`Error::Panicked`]. A supervisor runs once.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), jobvisor::Error> {
    /// use tokio::signal::unix::{signal, SignalKind};
    /// let sup = jobvisor::Supervisor::builder()
    ///     .database("jobs.db")
    ///     .configure(|c| c.drain_timeout = std::time::Duration::from_secs(30))
    ///     .build()
    ///     .await?;
    /// let mut term = signal(SignalKind::terminate()).unwrap();
    /// let mut again = signal(SignalKind::terminate()).unwrap();
    /// // The first SIGTERM drains; a second cuts the drain short.
    /// sup.run_until(async { term.recv().await; }, async { again.recv().await; again.recv().await; })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        use futures_util::FutureExt;
        let actors = self
            .shared
            .actors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(Actors {
            dispatcher,
            scheduler,
            maintenance,
        }) = actors
        else {
            return Err(Error::Invalid("this supervisor has already run".into()));
        };
        let notices = match self.shared.db.store().listen().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot LISTEN; polling only");
                None
            }
        };
        // Aborted if this future is dropped mid-run: the actors go with it,
        // even while clones of the supervisor live on.
        let mut scheduler = AbortOnDropHandle::new(tokio::spawn(scheduler.run()));
        let mut maintenance = AbortOnDropHandle::new(tokio::spawn(maintenance.run(notices)));
        let outbox_stop = tokio_util::sync::CancellationToken::new();
        let mut outbox = {
            let dispatcher = self.shared.dispatcher.clone();
            let wake = move || tell_or_drop(&dispatcher, ToDispatcher::Wake);
            let store = self.shared.db.store().clone();
            let lease = self.shared.node_lease;
            let run = crate::engine::webhooks::task::run(store, lease, wake, outbox_stop.clone());
            AbortOnDropHandle::new(tokio::spawn(run))
        };
        // Traces, only when the environment asks for them.
        let traces_stop = tokio_util::sync::CancellationToken::new();
        let traces = match crate::engine::traces::from_env() {
            Ok(Some(exporter)) => {
                crate::model::trace::set_exporting(true);
                tracing::info!("exporting traces over OTLP/HTTP");
                let run = crate::engine::traces::run(
                    self.shared.db.store().clone(),
                    exporter,
                    self.shared.finished.subscribe(),
                    self.node_id().to_string(),
                    traces_stop.clone(),
                );
                Some(AbortOnDropHandle::new(tokio::spawn(run)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "traces are not exported");
                None
            }
        };
        self.shared.ready.send_replace(true);
        // The dispatcher runs in this task (`shutdown` and `force` need not
        // be 'static); it stops at `shutdown` or when another actor ends,
        // which only a panic makes it do.
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let fail = |actor: Actor, panic: Box<dyn std::any::Any + Send>| {
            let message = jobvisor_worker::handler::panic_message(panic.as_ref());
            tracing::error!(?actor, panic = %message, "an actor of the supervisor panicked; stopping");
            failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(Error::Panicked { actor, message });
        };
        let joined = |r: Result<(), tokio::task::JoinError>| r.map_err(|e| e.try_into_panic().ok());
        let ended: Mutex<Option<Actor>> = Mutex::new(None);
        let stop = async {
            let (actor, r) = tokio::select! {
                _ = shutdown => return,
                r = &mut scheduler => (Actor::Scheduler, r),
                r = &mut maintenance => (Actor::Maintenance, r),
                r = &mut outbox => (Actor::Webhooks, r),
            };
            *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(actor);
            if let Err(Some(p)) = joined(r) {
                fail(actor, p);
            }
        };
        let dispatched = std::panic::AssertUnwindSafe(dispatcher.run(stop, force))
            .catch_unwind()
            .await;
        if let Err(p) = dispatched {
            fail(Actor::Dispatcher, p);
            // Its executions went with it: close them, to run again.
            self.shared.vitals.set_running(0);
            self.interrupt_own().await;
        }
        let ended = ended.into_inner().unwrap_or_else(|e| e.into_inner());
        outbox_stop.cancel();
        let actors = [
            (Actor::Scheduler, scheduler),
            (Actor::Maintenance, maintenance),
            (Actor::Webhooks, outbox),
        ];
        for (actor, panic) in self.stop_actors(actors, ended).await {
            fail(actor, panic);
        }
        self.shared.exec.pools.sweep(true).await;
        let unwritten = self.last_writes().await;
        // The last ends' spans go out before the exporter closes.
        if let Some(traces) = traces {
            traces_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), traces).await;
        }
        match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None if !unwritten.is_empty() => Err(Error::Unwritten(unwritten.join("; "))),
            None => Ok(()),
        }
    }

    /// Tells the scheduler and maintenance to stop (but for `ended`, which
    /// has; the webhooks' task was cancelled) and joins them all; returns the panics they ended with. A stop,
    /// unlike a wake, must arrive: it waits for room in the mailbox (an
    /// actor that ended has dropped its mailbox, and the send returns at
    /// once). An actor stuck on a database that does not answer is not
    /// waited for past STOP_WAIT: it is aborted where it is.
    async fn stop_actors(
        &self,
        actors: [(Actor, AbortOnDropHandle<()>); 3],
        ended: Option<Actor>,
    ) -> Vec<(Actor, Box<dyn std::any::Any + Send>)> {
        let _ =
            tokio::time::timeout(STOP_WAIT, self.shared.scheduler.send(ToScheduler::Stop)).await;
        let _ = tokio::time::timeout(STOP_WAIT, self.shared.maintenance.send(ToMaintenance::Stop))
            .await;
        let mut panics = Vec::new();
        for (actor, mut handle) in actors {
            if ended == Some(actor) {
                continue;
            }
            match tokio::time::timeout(STOP_WAIT, &mut handle).await {
                Ok(Err(e)) => {
                    if let Ok(p) = e.try_into_panic() {
                        panics.push((actor, p));
                    }
                }
                Ok(Ok(())) => {}
                Err(_) => {
                    tracing::warn!(
                        ?actor,
                        "did not stop within {}s: stopped where it was",
                        STOP_WAIT.as_secs()
                    );
                    handle.abort();
                }
            }
        }
        panics
    }

    /// The last writes: what the executions left with the relay, and this
    /// node's stop. A database that is gone is given FINAL_PATIENCE, and
    /// the stop goes on without them: returns what was not written, and
    /// why.
    async fn last_writes(&self) -> Vec<String> {
        let mut unwritten = Vec::new();
        let relay = &self.shared.exec.relay;
        if let Err(e) = relay.flush_or_give_up(FINAL_PATIENCE).await {
            unwritten.push(e.to_string());
        }
        let stopped = self
            .shared
            .db
            .store()
            .stop_node(&self.shared.node.id, now_micros());
        match tokio::time::timeout(FINAL_PATIENCE, stopped).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => unwritten.push(format!("the node's stop: {}", crate::error_chain(&e))),
            Err(_) => unwritten.push(format!(
                "the node's stop: no answer within {}s",
                FINAL_PATIENCE.as_secs()
            )),
        }
        unwritten
    }

    /// Closes this node's running executions as interrupted.
    async fn interrupt_own(&self) {
        let filter = store::ExecFilter {
            statuses: vec![crate::Status::Running],
            node: Some(self.shared.node.id.clone()),
            limit: i64::MAX as usize,
            ..Default::default()
        };
        match self.store().executions(&filter).await {
            Ok(rows) => {
                for e in rows {
                    let mut c = Completion::new(e.id, Outcome::Interrupted, now_micros());
                    c.error = Some("interrupted: the supervisor's dispatcher failed".into());
                    self.shared.exec.relay.send(RelayMsg::Complete(c)).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "cannot close this node's executions")
            }
        }
    }

    /// Makes `actor` panic, to test that a failing actor stops the
    /// supervisor cleanly (but for [`Actor::Webhooks`]).
    #[cfg(feature = "testing")]
    pub fn inject_panic(&self, actor: Actor) {
        match actor {
            Actor::Dispatcher => tell_or_drop(&self.shared.dispatcher, ToDispatcher::Panic),
            Actor::Scheduler => tell_or_drop(&self.shared.scheduler, ToScheduler::Panic),
            Actor::Maintenance => tell_or_drop(&self.shared.maintenance, ToMaintenance::Panic),
            // It has no mailbox: a loop over the outbox, with nothing to
            // tell it but to stop.
            Actor::Webhooks => {}
        }
    }

    /// How long ago the scheduler and the dispatcher last went round their
    /// loops. Both go round at least every 5 s while healthy (idle too);
    /// what feeds a watchdog should check them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// sup.ready().await;
    /// let (scheduler, dispatcher) = sup.liveness();
    /// assert!(scheduler < std::time::Duration::from_secs(30) && dispatcher < std::time::Duration::from_secs(30));
    /// # drop(stop); running.await??;
    /// # Ok(()) }
    /// ```
    pub fn liveness(&self) -> (Duration, Duration) {
        let age = |a: &AtomicI64| {
            Duration::from_micros((now_micros() - a.load(Ordering::Relaxed)).max(0) as u64)
        };
        let vitals = &self.shared.vitals;
        (age(&vitals.scheduler), age(&vitals.dispatcher))
    }

    /// Completes once [`Supervisor::run`] is listening for notices and
    /// dispatching (migrations and recovery were done by the builder).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let running = tokio::spawn({ let sup = sup.clone(); async move { sup.run(async { let _ = stopped.await; }).await } });
    /// sup.ready().await; // listening and dispatching now
    /// # drop(stop); running.await??;
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Lifecycle events: this node's, and on PostgreSQL every other node's
    /// too, while this supervisor lives. Other nodes publish events only
    /// while some node hears them, so theirs arrive from within a second of
    /// the first subscription on.
    /// A subscriber that falls more than 16,384 events behind misses the
    /// oldest (`RecvError::Lagged`); what they said is in the store.
    ///
    /// ```no_run
    /// # async fn demo(sup: jobvisor::Supervisor) {
    /// use jobvisor::events::EventKind;
    /// let mut events = sup.events().await;
    /// while let Ok(e) = events.recv().await {
    ///     if let EventKind::Progress { percent: Some(p), .. } = e.kind {
    ///         println!("{} is {p:.0}% done", e.execution_id);
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.exec.events.subscribe().await
    }

    /// This node's [`Client`]: the commands (enqueue, cancel, retry,
    /// jobs, queues, workflows) that a `Supervisor` also offers through
    /// `Deref`, with this node's actors told at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// let client: jobvisor::Client = sup.client();
    /// client.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// Tells the scheduler that jobs changed (added, paused, resumed).
    pub(crate) fn jobs_changed(&self) {
        tell_or_drop(&self.shared.scheduler, ToScheduler::JobsChanged);
    }

    /// Executions this node starts, as they start.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn subscribe_started(&self) -> broadcast::Receiver<Uuid> {
        self.shared.exec.started.subscribe()
    }

    /// Durations of the executions this node finished, per handler and
    /// outcome.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn durations(&self) -> crate::metrics::Durations {
        let d = self.shared.exec.durations.lock();
        d.unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A watch on execution `id`'s rows as this node writes them (its log,
    /// progress and end): what the API's streams wait on.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn watch(&self, id: Uuid) -> crate::engine::relay::Watch {
        self.shared.exec.relay.watch(id)
    }

    /// Messages waiting in the relay (its lag behind the executions).
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn relay_queued(&self) -> usize {
        self.shared.exec.relay.queued()
    }

    /// Executions running on this node now.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn running_count(&self) -> usize {
        self.shared.vitals.running()
    }
}

/// `registry`, with the test built-ins where `config` asks for them
/// (`misbehave` in-process only where its variable says so as well: its
/// faults would take the supervisor down).
fn with_test_builtins(mut registry: Registry, config: &Config) -> Registry {
    if let Some(t) = &config.test_builtins {
        t.register(&mut registry);
        if std::env::var_os(jobvisor_worker::builtins::MISBEHAVE_INPROC_ENV).is_none() {
            registry.remove("misbehave");
        }
    }
    registry
}

/// This process's node, starting `now`.
fn node_info(config: &Config, now: Micros) -> NodeInfo {
    let hostname = config.hostname.clone().unwrap_or_else(os::hostname);
    NodeInfo {
        id: format!("{hostname}-{}", Uuid::now_v7().simple()),
        hostname,
        pid: std::process::id() as i64,
        started_at: now,
        heartbeat_at: now,
        stopped_at: None,
        concurrency: Some(config.concurrency.min(u32::MAX as usize) as u32),
    }
}

/// The relay of this node: a completion that readied dependents wakes the
/// node's claims; a retry due later has them look when it comes due. Its
/// task ends once the last handle on it goes, after writing what was
/// queued.
fn start_relay(
    store: &Arc<dyn Store>,
    config: &Config,
    finished: &broadcast::Sender<Finished>,
    to_dispatcher: &mpsc::Sender<ToDispatcher>,
    events: &Arc<Hub>,
) -> Relay {
    let wake = to_dispatcher.clone();
    let ready = Arc::new(move |r: Ready| {
        tell_or_drop(
            &wake,
            match r {
                Ready::Now => ToDispatcher::Wake,
                Ready::At(at) => ToDispatcher::DueAt(at),
            },
        )
    });
    let (relay, _task) = Relay::start(
        store.clone(),
        config.relay_capacity,
        finished.clone(),
        ready,
        events.clone(),
    );
    relay
}

/// What this node's execution owners run with.
fn executor(
    config: &Config,
    store: &Arc<dyn Store>,
    relay: &Relay,
    registry: Registry,
    pools: &Arc<Pools>,
    events: &Arc<Hub>,
) -> Executor {
    let worker_program = config
        .worker_program
        .clone()
        .unwrap_or_else(crate::worker_program);
    Executor {
        store: store.clone(),
        relay: relay.clone(),
        registry,
        pools: pools.clone(),
        shim: worker_program.is_file().then(|| worker_program.clone()),
        worker_program,
        cgroups: config.cgroups,
        inproc_grace: config.inproc_grace,
        test_builtins: config.test_builtins.clone(),
        started: broadcast::channel(4096).0,
        durations: Mutex::default(),
        events: events.clone(),
    }
}
