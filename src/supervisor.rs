//! The supervisor: owns the store, the relay and the dispatcher, and runs
//! executions until told to stop.

use crate::model::Outcome;
use crate::model::{now_micros, Micros};
use crate::relay::{Relay, RelayMsg};
use crate::runner::{os, Stop, StopReason};
use crate::store::{self, CancelRequest, Completion, Finished, NodeInfo, Store};
use crate::submit::{self, RunSpec};
use crate::Error;
use jobvisor_worker::{Handler, Registry};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

/// Settings of a [`Supervisor`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Database URL or path.
    pub database: String,
    /// Executions running at once on this node.
    pub concurrency: usize,
    /// Most executions claimed in one query.
    pub claim_batch: usize,
    /// How often to look for work enqueued by other processes.
    pub poll_interval: Duration,
    /// Longest sleep of the scheduler between passes (it also wakes at the
    /// next due time), so jobs added by other processes are seen.
    pub schedule_poll_interval: Duration,
    /// How often to look for cancel requests made through the database.
    pub cancel_poll_interval: Duration,
    /// How often this node renews its heartbeat.
    pub heartbeat_interval: Duration,
    /// A node silent this long is dead; its executions are rescued.
    pub node_lease: Duration,
    /// How long an inproc handler may take to honour a cancel.
    pub inproc_grace: Duration,
    /// The `jobvisor-worker` program hosting built-ins in process mode.
    pub worker_program: Option<PathBuf>,
    /// Relay queue length (back-pressure beyond it).
    pub relay_capacity: usize,
    /// The host name this node registers under (default: the machine's).
    /// Nodes on the same host also judge each other by pid; on different
    /// hosts only by heartbeat.
    pub hostname: Option<String>,
    /// Give each process-mode execution its own cgroup where cgroup v2 is
    /// delegated to the supervisor (limits and whole-tree kill); off means
    /// rlimits and the process group only.
    pub cgroups: bool,
    /// At shutdown, how long running executions may finish before they are
    /// stopped (and recorded as interrupted, to run again). Zero stops them
    /// at once.
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: crate::default_database(),
            concurrency: 32,
            claim_batch: 512,
            poll_interval: Duration::from_millis(250),
            schedule_poll_interval: Duration::from_secs(1),
            cancel_poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(1),
            node_lease: Duration::from_secs(10),
            inproc_grace: Duration::from_secs(5),
            worker_program: None,
            relay_capacity: 16 * 1024,
            hostname: None,
            cgroups: true,
            drain_timeout: Duration::ZERO,
        }
    }
}

impl Config {
    /// The settings `jobvisor serve` starts from: the library's defaults,
    /// with a drain at shutdown (a service stopped by systemd lets running
    /// work finish; a library caller decides for itself).
    pub fn service() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            ..Self::default()
        }
    }
}

/// Builds a [`Supervisor`].
pub struct SupervisorBuilder {
    config: Config,
    registry: Registry,
}

impl SupervisorBuilder {
    /// Uses this database.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.config.database = url.into();
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Registers a Rust handler for inproc mode.
    pub fn register(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.registry.register(name, handler);
        self
    }

    /// Opens and migrates the database, recovers what a previous run left
    /// behind, and registers this node.
    pub async fn build(self) -> Result<Supervisor, Error> {
        let store = store::open(&self.config.database).await?;
        Supervisor::with_store(store, self.registry, self.config).await
    }
}

impl Inner {
    /// The running executions' stop handles. Never poisoned in practice
    /// (held only for an insert, remove or lookup); if it were, the map is
    /// still consistent, so keep going.
    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Stop>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Registry,
    pub(crate) config: Config,
    pub(crate) node: NodeInfo,
    pub(crate) relay: Relay,
    pub(crate) finished: broadcast::Sender<Finished>,
    pub(crate) wake: Notify,
    pub(crate) jobs_changed: Notify,
    pub(crate) cancel_check: Notify,
    pub(crate) running: Mutex<HashMap<Uuid, Arc<Stop>>>,
    pub(crate) worker_program: PathBuf,
    pub(crate) pools: crate::runner::pool::Pools,
    /// The exec shim, when the worker program is installed.
    pub(crate) shim: Option<PathBuf>,
    /// When the scheduler loop last went round (µs).
    pub(crate) scheduler_beat: std::sync::atomic::AtomicI64,
    /// When the dispatcher loop last went round (µs).
    pub(crate) dispatcher_beat: std::sync::atomic::AtomicI64,
    /// Set once `run` is listening and dispatching.
    pub(crate) ready: tokio::sync::watch::Sender<bool>,
    /// Executions this node starts.
    pub(crate) started: broadcast::Sender<Uuid>,
    /// Durations of executions finished on this node.
    pub(crate) durations: Mutex<crate::metrics::Durations>,
}

/// A running supervisor node. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    pub(crate) inner: Arc<Inner>,
}

impl Supervisor {
    /// A builder with the built-in handlers registered.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder {
            config: Config::default(),
            registry: Registry::with_builtins(),
        }
    }

    /// A supervisor over an open store.
    pub async fn with_store(
        store: Arc<dyn Store>,
        registry: Registry,
        config: Config,
    ) -> Result<Supervisor, Error> {
        let now = now_micros();
        let hostname = config.hostname.clone().unwrap_or_else(os::hostname);
        let node = NodeInfo {
            id: format!("{hostname}-{}", Uuid::now_v7().simple()),
            hostname,
            pid: std::process::id() as i64,
            started_at: now,
            heartbeat_at: now,
            stopped_at: None,
        };
        store.register_node(&node).await?;
        if config.cgroups {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| tracing::info!("{}", crate::runner::cgroup::detect().describe()));
        }
        let (finished, _) = broadcast::channel(4096);
        let (relay, _task) = Relay::start(store.clone(), config.relay_capacity, finished.clone());
        let worker_program = config
            .worker_program
            .clone()
            .unwrap_or_else(crate::worker_program);
        let sup = Supervisor {
            inner: Arc::new(Inner {
                store,
                registry,
                config,
                node,
                relay,
                finished,
                wake: Notify::new(),
                jobs_changed: Notify::new(),
                cancel_check: Notify::new(),
                running: Mutex::new(HashMap::new()),
                shim: worker_program.is_file().then(|| worker_program.clone()),
                worker_program,
                pools: Default::default(),
                ready: tokio::sync::watch::channel(false).0,
                started: broadcast::channel(4096).0,
                durations: Mutex::default(),
                scheduler_beat: now.into(),
                dispatcher_beat: now.into(),
            }),
        };
        sup.rescue().await?;
        Ok(sup)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node.id
    }

    /// Announces every execution that ends (after its row is written).
    pub fn subscribe(&self) -> broadcast::Receiver<Finished> {
        self.inner.finished.subscribe()
    }

    /// Enqueues one run; returns the execution's id.
    pub async fn enqueue(&self, spec: RunSpec) -> Result<Uuid, Error> {
        Ok(self.enqueue_many(vec![spec]).await?[0])
    }

    /// Enqueues several runs in one transaction.
    pub async fn enqueue_many(&self, specs: Vec<RunSpec>) -> Result<Vec<Uuid>, Error> {
        let local = |name: &str| self.inner.registry.get(name).is_some();
        let execs = submit::prepare_many(self.inner.store.as_ref(), &local, specs).await?;
        submit::enqueue(self.inner.store.as_ref(), &execs).await?;
        self.inner.wake.notify_one();
        Ok(execs.iter().map(|e| e.id).collect())
    }

    /// Requests a cancel; a running execution on this node is told at once,
    /// one on another node when that node polls.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<CancelRequest, Error> {
        let r = self
            .inner
            .store
            .request_cancel(id, reason, now_micros())
            .await?;
        if r == CancelRequest::Requested {
            if let Some(stop) = self.inner.running().get(&id) {
                stop.request(StopReason::Cancel(reason.to_string()));
            }
        }
        Ok(r)
    }

    /// Runs until `shutdown` completes; then lets running executions finish
    /// for up to [`Config::drain_timeout`], stops the rest (recorded as
    /// interrupted, so they run again), writes everything out and
    /// deregisters the node.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// Like [`Supervisor::run`], with a drain: after `shutdown`, running
    /// executions get up to [`Config::drain_timeout`] to finish; `force`
    /// (a second signal) cuts the wait short.
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let listener = match self.inner.store.listen().await {
            Ok(Some(mut notices)) => {
                let inner = self.inner.clone();
                Some(tokio::spawn(async move {
                    while let Some(n) = notices.recv().await {
                        match n {
                            crate::store::Notice::Work => inner.wake.notify_one(),
                            crate::store::Notice::Cancel => inner.cancel_check.notify_one(),
                            crate::store::Notice::Jobs => inner.jobs_changed.notify_one(),
                        }
                    }
                }))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot LISTEN; polling only");
                None
            }
        };
        let maintenance = tokio::spawn(self.clone().maintenance());
        let scheduler = tokio::spawn(self.clone().schedule_loop());
        self.inner.ready.send_replace(true);
        let result = self.dispatch(shutdown, force).await;
        self.inner.pools.sweep(true).await;
        maintenance.abort();
        scheduler.abort();
        if let Some(l) = listener {
            l.abort();
        }
        self.inner.relay.flush().await;
        self.inner
            .store
            .stop_node(&self.inner.node.id, now_micros())
            .await?;
        result
    }

    /// Runs scheduler passes: at the next due time, at least every poll
    /// interval (jobs added by other processes), and at once when a job
    /// changes in this process.
    async fn schedule_loop(self) {
        let inner = &self.inner;
        let mut finished = self.subscribe();
        let mut scheduler = crate::scheduler::Scheduler::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            beat(&inner.scheduler_beat);
            let wait = match scheduler.pass(inner.store.as_ref()).await {
                Ok(outcome) => {
                    backoff = Duration::from_millis(100);
                    if outcome.inserted > 0 {
                        inner.wake.notify_one();
                    }
                    if outcome.more {
                        continue;
                    }
                    let cap = inner.config.schedule_poll_interval;
                    match inner.store.next_due().await {
                        Ok(Some(t)) => {
                            let until = (t - now_micros()).max(0) as u64;
                            Duration::from_micros(until).min(cap)
                        }
                        Ok(None) => cap,
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "reading the next due time failed");
                            cap
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "scheduler pass failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            // A finished execution may be a daemon's: look again soon (at
            // most every 50 ms, however many executions finish).
            let woke_by_finish = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = inner.jobs_changed.notified() => false,
                r = finished.recv() => !matches!(r, Err(broadcast::error::RecvError::Closed)),
            };
            if woke_by_finish {
                tokio::time::sleep(Duration::from_millis(50)).await;
                while finished.try_recv().is_ok() {}
            }
        }
    }

    /// How long ago the scheduler and the dispatcher last went round their
    /// loops. Both go round at least every second or so while healthy;
    /// what feeds a watchdog should check them.
    pub fn liveness(&self) -> (Duration, Duration) {
        let age = |a: &std::sync::atomic::AtomicI64| {
            let t = a.load(std::sync::atomic::Ordering::Relaxed);
            Duration::from_micros((now_micros() - t).max(0) as u64)
        };
        (
            age(&self.inner.scheduler_beat),
            age(&self.inner.dispatcher_beat),
        )
    }

    /// Completes once [`Supervisor::run`] is listening for notices and
    /// dispatching (migrations and recovery were done by the builder).
    pub async fn ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Makes the dispatcher look for due work now.
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs job `name` now, outside its schedule; the new execution's id.
    pub async fn trigger_job(&self, name: &str) -> Result<Uuid, Error> {
        let id = crate::job::trigger(self.store().as_ref(), name).await?;
        self.wake();
        Ok(id)
    }

    /// Pauses job `name` (a daemon's running execution is stopped).
    pub async fn pause_job(&self, name: &str) -> Result<(), Error> {
        crate::job::pause(self.store().as_ref(), name).await?;
        self.jobs_changed();
        Ok(())
    }

    /// Resumes job `name`.
    pub async fn resume_job(&self, name: &str) -> Result<(), Error> {
        crate::job::resume(self.store().as_ref(), name).await?;
        self.jobs_changed();
        Ok(())
    }

    /// Changes queue `name`: its limit (`Some(None)` removes it) and
    /// whether it is paused; the dispatcher looks again at once.
    pub async fn set_queue(
        &self,
        name: &str,
        limit: Option<Option<u32>>,
        paused: Option<bool>,
    ) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::Invalid("a queue name cannot be empty".into()));
        }
        self.store().set_queue(name, limit, paused).await?;
        self.wake();
        Ok(())
    }

    /// Executions this node starts, as they start.
    pub fn subscribe_started(&self) -> broadcast::Receiver<Uuid> {
        self.inner.started.subscribe()
    }

    /// Durations of the executions this node finished, per handler and
    /// outcome.
    pub fn durations(&self) -> crate::metrics::Durations {
        self.inner
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Messages waiting in the relay (its lag behind the executions).
    pub fn relay_queued(&self) -> usize {
        self.inner.relay.queued()
    }

    /// Executions running on this node now.
    pub fn running_count(&self) -> usize {
        self.inner.running().len()
    }

    /// Tells the scheduler that jobs changed (added, paused, resumed).
    pub(crate) fn jobs_changed(&self) {
        self.inner.jobs_changed.notify_one();
    }

    /// Heartbeats, cancel polling and rescue of dead nodes' executions.
    async fn maintenance(self) {
        let inner = &self.inner;
        let mut cancel_tick = tokio::time::interval(inner.config.cancel_poll_interval);
        let mut heartbeat_tick = tokio::time::interval(inner.config.heartbeat_interval);
        let mut rescue_tick = tokio::time::interval(inner.config.node_lease / 4);
        let mut pool_tick = tokio::time::interval(crate::runner::pool::IDLE_TIMEOUT / 4);
        for t in [
            &mut cancel_tick,
            &mut heartbeat_tick,
            &mut rescue_tick,
            &mut pool_tick,
        ] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = async {
                    tokio::select! {
                        _ = cancel_tick.tick() => {}
                        _ = inner.cancel_check.notified() => {}
                    }
                } => {
                    // Cancels of pending executions are applied by whoever
                    // asks; only running ones need this node. Idle, there
                    // is nothing to look for.
                    if inner.running().is_empty() {
                        continue;
                    }
                    match inner.store.cancel_requests(&inner.node.id).await {
                        Ok(reqs) => {
                            let running = inner.running();
                            for (id, reason) in reqs {
                                if let Some(stop) = running.get(&id) {
                                    if stop.reason().is_none() {
                                        stop.request(StopReason::Cancel(reason));
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cancel poll failed"),
                    }
                }
                _ = heartbeat_tick.tick() => {
                    if let Err(e) = inner.store.heartbeat_node(&inner.node.id, now_micros()).await {
                        tracing::warn!(error = %crate::error_chain(&e), "node heartbeat failed");
                    }
                }
                _ = pool_tick.tick() => inner.pools.sweep(false).await,
                _ = rescue_tick.tick() => {
                    if let Err(e) = self.rescue().await {
                        tracing::warn!(error = %crate::error_chain(&e), "rescue sweep failed");
                    }
                }
            }
        }
    }

    /// Closes running executions of dead nodes as interrupted (retried if
    /// attempts remain). A node is dead when it stopped, when its process
    /// is gone (same host), or when its heartbeat is older than the lease.
    async fn rescue(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let now = now_micros();
        let lease: Micros = inner.config.node_lease.as_micros() as Micros;
        let mut rescued = 0;
        for r in inner.store.foreign_running(&inner.node.id).await? {
            let same_host = r
                .node
                .as_ref()
                .is_some_and(|n| n.hostname == inner.node.hostname);
            let dead = match &r.node {
                None => true,
                Some(n) => {
                    n.stopped_at.is_some()
                        || (same_host && !os::pid_alive(n.pid))
                        || n.heartbeat_at < now - lease
                }
            };
            if !dead {
                continue;
            }
            if let (true, Some(pid)) = (same_host, r.pid) {
                // The children died with their supervisor (death signal);
                // this takes whatever they left in their group.
                os::signal_group(pid as i32, nix::sys::signal::Signal::SIGKILL);
            }
            let mut c = Completion::new(r.id, Outcome::Interrupted, now);
            c.error = Some(format!(
                "interrupted: node {} stopped while it ran",
                r.node.as_ref().map_or("(unknown)", |n| n.id.as_str())
            ));
            inner.relay.send(RelayMsg::Complete(c)).await;
            rescued += 1;
        }
        if rescued > 0 {
            inner.relay.flush().await;
            tracing::warn!(rescued, "closed executions of stopped nodes as interrupted");
            inner.wake.notify_one();
        }
        Ok(())
    }
}

/// Records that a loop went round.
pub(crate) fn beat(at: &std::sync::atomic::AtomicI64) {
    at.store(now_micros(), std::sync::atomic::Ordering::Relaxed);
}
