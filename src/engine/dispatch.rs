//! The dispatcher: claims due executions in batches up to the free
//! concurrency and gives each its own owner task, which runs it in its
//! mode's runner and hands the completion to the relay. It owns the
//! running executions' stop handles; cancels reach them as messages.

use crate::engine::events::Hub;
use crate::engine::relay::Relay;
use crate::engine::relay::{LogSink, RelayMsg};
use crate::engine::runner::pool::Pools;
use crate::engine::runner::process::ProcessPlan;
use crate::engine::runner::{inproc, process, Stop, StopReason};
use crate::engine::{ToDispatcher, Vitals};
use crate::model::{now_micros, HandlerKind, Outcome, ProcessLimits, MAX_SNOOZES};
use crate::store::{Claimed, Completion, Store};
use jobvisor_worker::Registry;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

/// What an execution's owner task needs to run it.
pub(crate) struct Executor {
    /// For in-process handlers' transactions.
    pub(crate) store: Arc<dyn crate::store::Store>,
    pub(crate) relay: Relay,
    pub(crate) registry: Registry,
    pub(crate) pools: Arc<Pools>,
    pub(crate) worker_program: PathBuf,
    /// The exec shim, when the worker program is installed.
    pub(crate) shim: Option<PathBuf>,
    pub(crate) cgroups: bool,
    pub(crate) inproc_grace: Duration,
    /// The test built-ins, for worker processes too.
    pub(crate) test_builtins: Option<jobvisor_worker::builtins::TestBuiltins>,
    pub(crate) started: broadcast::Sender<Uuid>,
    pub(crate) durations: Mutex<crate::metrics::Durations>,
    pub(crate) events: Arc<Hub>,
}

/// How long after its last execution ended a dispatcher stays on its base
/// poll: the relay writes a retry due later a moment after the end.
const QUIET_AFTER: Duration = Duration::from_secs(1);

/// How long a claim in flight when the shutdown comes is still waited
/// for: one that committed has executions to start (and drain).
const CLAIM_GRACE: Duration = Duration::from_secs(5);

/// What a batch of messages told the dispatcher.
struct Handled {
    woken: Woken,
    /// The last news of the database's watch.
    watch: Option<bool>,
    /// The earliest due time announced.
    due_at: Option<crate::model::Micros>,
}

/// The runtime's instant of wall-clock time `at` (now, if past).
fn instant_at(at: crate::model::Micros) -> tokio::time::Instant {
    let wait = at.saturating_sub(now_micros()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_micros(wait)
}

/// What a batch of messages asks of the dispatcher's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    /// Nothing.
    No,
    /// Look for due work (a read), then claim if there is some.
    Look,
    /// Claim now.
    Claim,
}

pub(crate) struct Dispatcher {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) node: String,
    /// How many executions run at once; changed while it runs
    /// (`Supervisor::set_concurrency`): a decrease stops nothing, it only
    /// claims less until enough have ended.
    pub(crate) concurrency: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) claim_batch: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) inbox: mpsc::Receiver<ToDispatcher>,
    pub(crate) vitals: Arc<Vitals>,
    pub(crate) exec: Arc<Executor>,
    pub(crate) running: HashMap<Uuid, Arc<Stop>>,
    pub(crate) tasks: JoinSet<Uuid>,
}

impl Dispatcher {
    /// Claims and runs until `shutdown`, then drains: lets what runs
    /// finish, up to the drain timeout (or until `force`), and stops the
    /// rest, recorded as interrupted so that they run again.
    pub(crate) async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) {
        let mut p = Polls::new(self.poll_interval);
        tokio::pin!(shutdown);
        loop {
            self.vitals
                .dispatcher
                .store(now_micros(), std::sync::atomic::Ordering::Relaxed);
            while let Some(done) = self.tasks.try_join_next() {
                self.ended(done);
            }
            if !self.tasks.is_empty() {
                p.active_at = tokio::time::Instant::now();
                p.next = p.next.min(p.active_at + p.every);
            }
            let concurrency = self.concurrency.load(std::sync::atomic::Ordering::Relaxed);
            let free = concurrency.saturating_sub(self.tasks.len());
            if p.backlog && free > 0 && p.claim_retry.is_none() {
                let want = free.min(self.claim_batch);
                // A claim is raced with the shutdown, so that a database
                // that hangs does not hold the stop. One in flight may
                // already have committed: what it took is still started
                // (and drained) if it answers within a grace.
                let (claimed, stopping) = {
                    let claim = self.store.claim(&self.node, want, now_micros());
                    tokio::pin!(claim);
                    tokio::select! {
                        biased;
                        r = &mut claim => (Some(r), false),
                        _ = &mut shutdown => (tokio::time::timeout(CLAIM_GRACE, claim).await.ok(), true),
                    }
                };
                match claimed {
                    Some(Ok(claims)) => {
                        let claimed = claims.executions;
                        if claimed.is_empty() && p.polled {
                            p.every = (p.every * 2).min(p.slowest());
                        } else if !claimed.is_empty() {
                            p.every = p.base;
                        }
                        p.polled = false;
                        p.backlog = claimed.len() == want;
                        p.claim_backoff = Duration::from_millis(100);
                        p.token_at = claims.next_token_at.map(instant_at);
                        for c in claimed {
                            self.start(c);
                        }
                        if stopping {
                            break;
                        }
                        if p.backlog && self.tasks.len() < concurrency {
                            continue;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %crate::error_chain(&e), "claim failed; retrying");
                        if stopping {
                            break;
                        }
                        // Retried after a backoff that the loop below waits
                        // out, with the shutdown and everything else.
                        p.claim_retry = Some(tokio::time::Instant::now() + p.claim_backoff);
                        p.claim_backoff = (p.claim_backoff * 2).min(Duration::from_secs(5));
                    }
                    None => {
                        tracing::warn!("stopping with a claim unanswered: whatever it took is rescued as interrupted and runs again");
                        break;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.ended(done);
                    p.active_at = tokio::time::Instant::now();
                }
                Some(msg) = self.inbox.recv() => {
                    // Everything queued at once, so that a burst of wakes
                    // is one claim, not one claim each.
                    p.heard(self.handle_all(msg));
                }
                _ = sleep_until_some(p.token_at) => {
                    p.token_at = None;
                    p.backlog = true;
                }
                _ = sleep_until_some(p.claim_retry) => {
                    p.claim_retry = None;
                    p.backlog = true;
                }
                // Look before claiming: a read is cheaper than the claim's
                // write.
                _ = tokio::time::sleep_until(p.next) => {
                    p.polled_at = tokio::time::Instant::now();
                    p.next = p.polled_at + p.every;
                    // Reads, raced with the shutdown like every wait here.
                    let due = tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        due = self.store.has_due(now_micros()) => due,
                    };
                    p.backlog = due.unwrap_or(true);
                    p.polled = p.backlog;
                    if !p.backlog && p.watched && self.tasks.is_empty() && p.active_at + QUIET_AFTER <= p.polled_at {
                        p.next = tokio::select! {
                            biased;
                            _ = &mut shutdown => break,
                            at = self.quiet_poll(p.polled_at) => at,
                        };
                    }
                }
            }
        }
        self.drain(force).await;
    }

    /// After the shutdown: lets what runs finish, up to the drain timeout
    /// (or until `force`), then stops the rest, recorded as interrupted so
    /// that they run again.
    async fn drain(&mut self, force: impl Future<Output = ()>) {
        let drain = self.drain_timeout;
        if !self.tasks.is_empty() && !drain.is_zero() {
            tracing::info!(running = self.tasks.len(), timeout = %humantime::format_duration(drain), "draining");
            let deadline = tokio::time::sleep(drain);
            tokio::pin!(deadline, force);
            loop {
                tokio::select! {
                    joined = self.tasks.join_next() => match joined {
                        Some(done) => self.ended(done),
                        None => break,
                    },
                    Some(msg) = self.inbox.recv() => {
                        self.handle_all(msg);
                    }
                    _ = &mut deadline => {
                        tracing::info!(running = self.tasks.len(), "drain timeout: stopping the rest");
                        break;
                    }
                    _ = &mut force => {
                        tracing::info!(running = self.tasks.len(), "second signal: stopping the rest now");
                        break;
                    }
                }
            }
        }
        for stop in self.running.values() {
            stop.request(StopReason::Shutdown);
        }
        while let Some(done) = self.tasks.join_next().await {
            self.ended(done);
        }
    }

    /// Handles `first` and whatever else is queued: whether any was a
    /// wake, the last news of the database's watch, and the earliest due
    /// time announced.
    fn handle_all(&mut self, first: ToDispatcher) -> Handled {
        let mut woken = Woken::No;
        let mut watch = None;
        let mut due_at: Option<crate::model::Micros> = None;
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                ToDispatcher::Watched(w) => watch = Some(w),
                ToDispatcher::DueAt(at) => due_at = Some(due_at.map_or(at, |d| d.min(at))),
                ToDispatcher::Wake => woken = Woken::Claim,
                ToDispatcher::Look if woken == Woken::No => woken = Woken::Look,
                ToDispatcher::Look => {}
                ToDispatcher::Cancel { id, reason } => {
                    if let Some(stop) = self.running.get(&id) {
                        stop.request(StopReason::Cancel(reason));
                    }
                }
                ToDispatcher::Panic => panic!("fault injected into the dispatcher"),
            }
            next = self.inbox.try_recv().ok();
        }
        Handled {
            woken,
            watch,
            due_at,
        }
    }

    /// When an idle, watched dispatcher next polls: when the earliest
    /// pending execution comes due, at the latest after [`QUIET_POLL`] (or
    /// the poll interval, if longer).
    async fn quiet_poll(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let latest = now + crate::idle::idle(crate::engine::QUIET_POLL).max(self.poll_interval);
        match self.store.next_run_at().await {
            Ok(Some(at)) => latest.min(instant_at(at)),
            Ok(None) => latest,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading the next due time failed");
                now + self.poll_interval
            }
        }
    }

    fn start(&mut self, claimed: Claimed) {
        let stop = Arc::new(Stop::default());
        if claimed.cancel_requested {
            stop.request(StopReason::Cancel("requested before it started".into()));
        }
        self.running.insert(claimed.id, stop.clone());
        self.vitals.set_running(self.running.len());
        self.vitals.count_start();
        self.tasks
            .spawn(execute_guarded(self.exec.clone(), claimed, stop));
    }

    /// An owner task ended (its completion is with the relay).
    fn ended(&mut self, done: Result<Uuid, tokio::task::JoinError>) {
        match done {
            Ok(id) => {
                self.running.remove(&id);
            }
            // Owners catch their own panics, so only an abort ends one this
            // way, without its id: forget the stop handles no owner holds.
            Err(e) => {
                tracing::error!(error = %e, "execution owner ended abnormally");
                self.running.retain(|_, stop| Arc::strong_count(stop) > 1);
            }
        }
        self.vitals.set_running(self.running.len());
    }
}

/// The dispatcher's polling: polls find work enqueued by other processes.
/// When a poll finds due rows that cannot be claimed (a paused or full
/// queue), polls slow down until something changes, so that a held
/// backlog is not scanned ten times a second: to one a second, or, while
/// the database is watched, to one every [`QUIET_POLL`]. Then whatever can
/// free held rows is announced: enqueues, queue and job changes, ends
/// under a limit (on every node: the end's NOTIFY), another process's
/// writes (SQLite's watch); the next start a rate allows is a timer. The
/// polls are a safety net.
///
/// [`QUIET_POLL`]: crate::engine::QUIET_POLL
struct Polls {
    /// The configured poll interval.
    base: Duration,
    /// The interval now.
    every: Duration,
    /// When the next poll reads.
    next: tokio::time::Instant,
    /// Whether the last poll found due work (a claim then finding none
    /// slows the polls down).
    polled: bool,
    polled_at: tokio::time::Instant,
    /// Whether due work may be waiting: claim.
    backlog: bool,
    claim_backoff: Duration,
    /// When a rate that held executions back has its next start: a claim
    /// then, rather than polls until it comes.
    token_at: Option<tokio::time::Instant>,
    /// Whether other processes' writes are announced (then idle polls are
    /// quiet ones).
    watched: bool,
    /// When this node last had executions running (quiet polls come after).
    active_at: tokio::time::Instant,
    /// When a claim that failed is tried again.
    claim_retry: Option<tokio::time::Instant>,
}

impl Polls {
    /// The slowest polls get while due rows are held.
    fn slowest(&self) -> Duration {
        let held = if self.watched {
            crate::idle::idle(crate::engine::QUIET_POLL)
        } else {
            Duration::from_secs(1)
        };
        self.base.max(held)
    }

    fn new(base: Duration) -> Polls {
        let now = tokio::time::Instant::now();
        Polls {
            base,
            every: base,
            next: now + base,
            polled: false,
            polled_at: now,
            backlog: true,
            claim_backoff: Duration::from_millis(100),
            token_at: None,
            watched: false,
            active_at: now,
            claim_retry: None,
        }
    }

    /// What a batch of messages changes (everything queued is handled at
    /// once, so that a burst of wakes is one claim, not one claim each).
    fn heard(&mut self, handled: Handled) {
        let Handled {
            woken,
            watch,
            due_at,
        } = handled;
        if let Some(w) = watch {
            self.watched = w;
            self.next = self.next.min(tokio::time::Instant::now() + self.every);
        }
        if let Some(at) = due_at {
            self.next = self.next.min(instant_at(at));
        }
        match woken {
            // A claim that finds nothing may have been woken
            // by an enqueue due later: a poll soon reads when.
            Woken::Claim => {
                self.backlog = true;
                self.every = self.base;
                self.next = self
                    .next
                    .min(tokio::time::Instant::now() + self.every.min(QUIET_AFTER));
            }
            // The poll's read, now; but while due rows are held
            // (a paused or full queue), every change would find
            // work it cannot claim: then at most every base poll.
            Woken::Look if !self.backlog => {
                let now = tokio::time::Instant::now();
                let soonest = if self.every > self.base {
                    self.polled_at + self.base
                } else {
                    now
                };
                self.next = self.next.min(soonest.max(now));
            }
            Woken::Look | Woken::No => {}
        }
    }
}

/// Sleeps until `at`, or forever when there is none.
pub(crate) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs an execution; should its owner panic (a bug in the supervisor,
/// not in the job), the execution still ends, as failed. Returns its id.
async fn execute_guarded(exec: Arc<Executor>, claimed: Claimed, stop: Arc<Stop>) -> Uuid {
    use futures_util::FutureExt;
    let id = claimed.id;
    let relay = exec.relay.clone();
    let outcome = std::panic::AssertUnwindSafe(execute(exec, claimed, stop))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let msg = jobvisor_worker::handler::panic_message(panic.as_ref());
        tracing::error!(execution = %id, panic = %msg, "execution owner panicked");
        let c = Completion::failed(id, true, format!("supervisor error: {msg}"));
        relay.send(RelayMsg::Complete(c)).await;
    }
    id
}

async fn execute(exec: Arc<Executor>, claimed: Claimed, stop: Arc<Stop>) {
    // The log budget holds in every mode: the handler's, or the default.
    let max_log = match claimed.handler_spec() {
        Ok(Some(spec)) => spec.limits.max_log_bytes,
        _ => crate::model::DEFAULT_MAX_LOG_BYTES,
    };
    let sink = LogSink::new(claimed.id, exec.relay.clone()).with_budget(max_log);
    let _ = exec.started.send(claimed.id);
    exec.events.started(
        claimed.id,
        &claimed.handler,
        &claimed.job,
        claimed.attempt,
        claimed.mode,
    );
    let began = std::time::Instant::now();
    let mut handler_tx = None;
    let mut completion = match claimed.mode {
        crate::model::Mode::Inproc => match exec.registry.get(&claimed.handler) {
            Some(h) => {
                let (c, tx) =
                    inproc::run(h, &claimed, &stop, &sink, exec.inproc_grace, &exec.store).await;
                handler_tx = tx;
                c
            }
            None => failed(
                &claimed,
                format!(
                    "handler {:?} is not registered in this supervisor for inproc mode",
                    claimed.handler
                ),
            ),
        },
        crate::model::Mode::Process => match exec.plan(&claimed) {
            Ok(plan) if plan.limits.pool_size > 0 => {
                exec.pools.run(&plan, &claimed, &stop, &sink).await
            }
            Ok(plan) => process::run(&plan, &claimed, &stop, &sink).await,
            Err(e) => failed(&claimed, crate::error_chain(&e)),
        },
    };
    sink.report_dropped().await;
    if matches!(completion.outcome, Outcome::Snoozed { .. }) && claimed.snoozes >= MAX_SNOOZES {
        completion.outcome = Outcome::Failed { retryable: false };
        completion.error = Some(format!(
            "snoozed {MAX_SNOOZES} times already: giving up (the limit per execution chain)"
        ));
    }
    // The success row commits with the handler's own writes.
    let written = match handler_tx {
        Some(tx) => commit_handler_tx(&exec, tx, &mut completion).await,
        None => None,
    };
    exec.durations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .observe(
            &claimed.handler,
            completion.outcome.status(),
            began.elapsed(),
        );
    if let Some(finished) = written {
        exec.relay
            .send(RelayMsg::Written(completion, finished))
            .await;
        return;
    }
    exec.relay.send(RelayMsg::Complete(completion)).await;
}

/// Writes succeeded `completion` in its handler's transaction `tx` and
/// commits both; returns what it finished. `None`: nothing was committed,
/// and `completion` is to go the usual way. Either the execution was no
/// longer running (cancelled to its end, rescued), so that the end is
/// refused there too, or the commit failed, which fails the attempt. (If a
/// commit's answer was lost after it was made, the run has ended, and the
/// failure is refused.)
async fn commit_handler_tx(
    exec: &Executor,
    tx: Box<dyn std::any::Any + Send>,
    completion: &mut Completion,
) -> Option<Vec<crate::store::Finished>> {
    match exec.store.complete_in(tx, completion).await {
        Ok(finished) => finished,
        Err(e) => {
            let error = crate::error_chain(&e);
            tracing::warn!(execution = %completion.id, %error, "a handler's transaction did not commit");
            completion.outcome = Outcome::Failed { retryable: true };
            completion.output = None;
            completion.error = Some(format!("the handler's transaction did not commit: {error}"));
            None
        }
    }
}

/// Why an execution cannot be planned (its completion's error).
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("cannot read handler")]
    Handler(#[from] crate::store::StoreError),
    #[error("unknown handler {0:?}")]
    Unknown(String),
}

impl Executor {
    fn plan(&self, claimed: &Claimed) -> Result<ProcessPlan, PlanError> {
        let spec = claimed.handler_spec()?;
        let plan = |program: PathBuf, args, limits, self_guarding: bool| ProcessPlan {
            shim: self.shim.clone(),
            handler: claimed.handler.clone(),
            program,
            args,
            limits,
            // Only the worker program hosts built-ins.
            test_builtins: self.test_builtins.clone().filter(|_| self_guarding),
            self_guarding,
            cgroup: self.cgroups,
        };
        use jobvisor_worker::builtins::{NAMES, TEST_NAMES};
        let name = claimed.handler.as_str();
        let builtin =
            NAMES.contains(&name) || (TEST_NAMES.contains(&name) && self.test_builtins.is_some());
        Ok(match spec {
            Some(h) => match h.kind {
                HandlerKind::Exec { program, args } => plan(program.into(), args, h.limits, false),
                HandlerKind::Rust => plan(self.worker_program.clone(), Vec::new(), h.limits, true),
            },
            None if builtin => plan(
                self.worker_program.clone(),
                Vec::new(),
                ProcessLimits::default(),
                true,
            ),
            None => return Err(PlanError::Unknown(claimed.handler.clone())),
        })
    }
}

fn failed(claimed: &Claimed, error: String) -> Completion {
    Completion::failed(claimed.id, false, error)
}
