//! The supervisor: owns the store, the relay and the dispatcher, and runs
//! executions until told to stop.

use crate::model::{now_micros, HandlerKind, Micros, ProcessLimits, Status};
use crate::relay::{LogSink, Relay, RelayMsg};
use crate::runner::process::ProcessPlan;
use crate::runner::{inproc, os, process, Stop, StopReason};
use crate::store::{self, CancelRequest, Claimed, Completion, Finished, NodeInfo, Store};
use crate::submit::{self, RunSpec};
use crate::Error;
use jobvisor_worker::{Handler, Registry};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinSet;
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: crate::default_database(),
            concurrency: 32,
            claim_batch: 512,
            poll_interval: Duration::from_millis(100),
            cancel_poll_interval: Duration::from_millis(200),
            heartbeat_interval: Duration::from_secs(1),
            node_lease: Duration::from_secs(10),
            inproc_grace: Duration::from_secs(5),
            worker_program: None,
            relay_capacity: 16 * 1024,
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

struct Inner {
    store: Arc<dyn Store>,
    registry: Registry,
    config: Config,
    node: NodeInfo,
    relay: Relay,
    finished: broadcast::Sender<Finished>,
    wake: Notify,
    running: Mutex<HashMap<Uuid, Arc<Stop>>>,
    worker_program: PathBuf,
}

/// A running supervisor node. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
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
        let node = NodeInfo {
            id: format!("{}-{}", os::hostname(), Uuid::now_v7().simple()),
            hostname: os::hostname(),
            pid: std::process::id() as i64,
            started_at: now,
            heartbeat_at: now,
            stopped_at: None,
        };
        store.register_node(&node).await?;
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
                running: Mutex::new(HashMap::new()),
                worker_program,
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
            if let Some(stop) = self.inner.running.lock().expect("lock").get(&id) {
                stop.request(StopReason::Cancel(reason.to_string()));
            }
        }
        Ok(r)
    }

    /// Runs until `shutdown` completes; then stops every running execution
    /// (recorded as interrupted, so it is retried if attempts remain),
    /// writes everything out and deregisters the node.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let maintenance = tokio::spawn(self.clone().maintenance());
        let result = self.dispatch(shutdown).await;
        maintenance.abort();
        self.inner.relay.flush().await;
        self.inner
            .store
            .stop_node(&self.inner.node.id, now_micros())
            .await?;
        result
    }

    async fn dispatch(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let inner = &self.inner;
        let mut tasks = JoinSet::new();
        let mut poll = tokio::time::interval(inner.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut backlog = true;
        let mut claim_backoff = Duration::from_millis(100);
        loop {
            while tasks.try_join_next().is_some() {}
            let free = inner.config.concurrency.saturating_sub(tasks.len());
            if backlog && free > 0 {
                let want = free.min(inner.config.claim_batch);
                match inner.store.claim(&inner.node.id, want, now_micros()).await {
                    Ok(claimed) => {
                        backlog = claimed.len() == want;
                        claim_backoff = Duration::from_millis(100);
                        for c in claimed {
                            tasks.spawn(self.clone().execute(c));
                        }
                        if backlog && tasks.len() < inner.config.concurrency {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %crate::error_chain(&e), "claim failed; retrying");
                        tokio::time::sleep(claim_backoff).await;
                        claim_backoff = (claim_backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = inner.wake.notified() => backlog = true,
                _ = poll.tick() => backlog = true,
            }
        }
        // Shutting down: stop what runs, wait for every owner to finish.
        for stop in inner.running.lock().expect("lock").values() {
            stop.request(StopReason::Shutdown);
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn execute(self, claimed: Claimed) {
        let inner = &self.inner;
        let stop = Arc::new(Stop::default());
        inner
            .running
            .lock()
            .expect("lock")
            .insert(claimed.id, stop.clone());
        if claimed.cancel_requested {
            stop.request(StopReason::Cancel("requested before it started".into()));
        }
        let sink = LogSink::new(claimed.id, inner.relay.clone());
        let completion = match claimed.mode {
            crate::model::Mode::Inproc => match inner.registry.get(&claimed.handler) {
                Some(h) => inproc::run(h, &claimed, &stop, &sink, inner.config.inproc_grace).await,
                None => failed(
                    &claimed,
                    format!(
                        "handler {:?} is not registered in this supervisor for inproc mode",
                        claimed.handler
                    ),
                ),
            },
            crate::model::Mode::Process => match self.plan(&claimed) {
                Ok(plan) => process::run(&plan, &claimed, &stop, &sink).await,
                Err(e) => failed(&claimed, e),
            },
        };
        inner.relay.send(RelayMsg::Complete(completion)).await;
        inner.running.lock().expect("lock").remove(&claimed.id);
    }

    fn plan(&self, claimed: &Claimed) -> Result<ProcessPlan, String> {
        let inner = &self.inner;
        let spec = claimed
            .handler_spec()
            .map_err(|e| format!("cannot read handler: {}", crate::error_chain(&e)))?;
        Ok(match spec {
            Some(h) => match h.kind {
                HandlerKind::Exec { program, args } => ProcessPlan {
                    program: program.into(),
                    args,
                    limits: h.limits,
                    self_guarding: false,
                },
                HandlerKind::Rust => ProcessPlan {
                    program: inner.worker_program.clone(),
                    args: Vec::new(),
                    limits: h.limits,
                    self_guarding: true,
                },
            },
            None if jobvisor_worker::builtins::NAMES.contains(&claimed.handler.as_str()) => {
                ProcessPlan {
                    program: inner.worker_program.clone(),
                    args: Vec::new(),
                    limits: ProcessLimits::default(),
                    self_guarding: true,
                }
            }
            None => return Err(format!("unknown handler {:?}", claimed.handler)),
        })
    }

    /// Heartbeats, cancel polling and rescue of dead nodes' executions.
    async fn maintenance(self) {
        let inner = &self.inner;
        let mut cancel_tick = tokio::time::interval(inner.config.cancel_poll_interval);
        let mut heartbeat_tick = tokio::time::interval(inner.config.heartbeat_interval);
        let mut rescue_tick = tokio::time::interval(inner.config.node_lease / 4);
        for t in [&mut cancel_tick, &mut heartbeat_tick, &mut rescue_tick] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = cancel_tick.tick() => {
                    match inner.store.cancel_requests(&inner.node.id).await {
                        Ok(reqs) => {
                            let running = inner.running.lock().expect("lock");
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
            let mut c = Completion::new(r.id, Status::Failed, now);
            c.interrupted = true;
            c.retryable = true;
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

fn failed(claimed: &Claimed, error: String) -> Completion {
    let mut c = Completion::new(claimed.id, Status::Failed, now_micros());
    c.error = Some(error);
    c
}
