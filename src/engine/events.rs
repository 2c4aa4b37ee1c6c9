//! Lifecycle events for an embedding program: what happens to executions,
//! as it happens, from [`crate::Supervisor::events`] and the builder's
//! hooks.
//!
//! Events are announced after the rows that record them are committed, so
//! what an event says can be read back from the store. Subscribers and
//! hooks hear this node's events in the order it announced them. That is
//! not always the order they happened in: an execution's `enqueued` is
//! announced by the task that inserted it, its `started` by the one that
//! claimed it, and a claim can win that race (a node announces a run it
//! inserts before it wakes its own dispatcher, so it rarely does). Events
//! about one execution from several nodes (enqueued on one, or by a CLI
//! command, and run on another) are in no set order either. Each event's
//! `at` and the execution's row tell what happened when. On PostgreSQL every
//! node publishes its events (NOTIFY on `jobvisor_events`, batched) while
//! any node hears them, and a node whose `events()` is subscribed hears them
//! from every node (another node's within a second of the subscription); on
//! SQLite a node hears its own. On PostgreSQL, CLI commands (`jobvisor run`,
//! `exec cancel`, ...) publish what they do too, as node `cli@HOST`. Hooks
//! run for this node's events only, so that a failure alerts once however
//! many nodes there are.

use crate::model::{Micros, Mode};
use crate::store::{Finished, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// Something that happened to an execution.
///
/// ```
/// use jobvisor::events::{Event, EventKind};
/// fn describe(e: &Event) -> String {
///     match &e.kind {
///         EventKind::Failed { error, .. } => format!("{} failed: {error}", e.handler),
///         EventKind::Retrying { attempt, next_run_at, .. } => {
///             format!("{} will try attempt {} at {next_run_at}", e.handler, attempt + 1)
///         }
///         other => format!("{}: {}", e.handler, other.name()),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The execution it happened to.
    pub execution_id: Uuid,
    /// Its handler; empty only for an execution this node never saw start
    /// whose row is gone.
    pub handler: String,
    /// Its job, or `None` for an ad-hoc run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The node that reported it (`cli@HOST` for a CLI command's).
    pub node: String,
    /// When it happened (µs since the epoch).
    pub at: Micros,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with what matters of it.
///
/// ```
/// use jobvisor::events::EventKind;
/// let json = r#"{"type": "retrying", "attempt": 1, "error": "busy", "next_id": "01a23b71-c420-700b-8836-95eaa92fe2e9", "next_run_at": 1800000000000000}"#;
/// let kind: EventKind = serde_json::from_str(json).unwrap();
/// assert_eq!(kind.name(), "retrying");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A run was inserted (through this supervisor, a workflow, a trigger,
    /// a job's schedule, or a retry asked for by hand); not an automatic
    /// retry, which is [`EventKind::Retrying`].
    Enqueued {
        /// Not before then.
        run_at: Micros,
        /// The queue it waits in.
        queue: String,
    },
    /// A node claimed it and started it.
    Started {
        /// 1 for the first attempt.
        attempt: u32,
        /// How it runs.
        mode: Mode,
    },
    /// It reported progress (the latest values; reports that arrive faster
    /// than the store is written are folded into one).
    Progress {
        /// 0..=100.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<f64>,
        /// What it is doing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Units done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        done: Option<i64>,
        /// Units in all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<i64>,
    },
    /// It failed (or was interrupted), and another attempt is scheduled.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// The execution of the next attempt.
        next_id: Uuid,
        /// When it is due (µs since the epoch).
        next_run_at: Micros,
    },
    /// It ended well.
    Succeeded {
        /// The attempt that succeeded.
        attempt: u32,
        /// Its output; from another node, `None` when it was too large for
        /// a notice (read the execution).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
    },
    /// It failed for good: no attempt follows.
    Failed {
        /// The last attempt.
        attempt: u32,
        /// Why.
        error: String,
    },
    /// It was cancelled: while it ran, or before it started (by hand, or
    /// because an upstream it needed failed).
    Cancelled {
        /// How it ended, or the reason given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Its handler asked to run again later; that run is scheduled.
    Snoozed {
        /// The execution that runs then.
        next_id: Uuid,
        /// When (µs since the epoch).
        until: Micros,
    },
}

impl EventKind {
    /// The kind's name, as in JSON's `type`: `enqueued`, `started`,
    /// `progress`, `retrying`, `succeeded`, `failed`, `cancelled`,
    /// `snoozed`.
    ///
    /// ```
    /// use jobvisor::events::EventKind;
    /// let kind = EventKind::Failed { attempt: 3, error: "gave up".into() };
    /// assert_eq!(kind.name(), "failed");
    /// assert_eq!(serde_json::to_value(&kind).unwrap()["type"], "failed");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Enqueued { .. } => "enqueued",
            EventKind::Started { .. } => "started",
            EventKind::Progress { .. } => "progress",
            EventKind::Retrying { .. } => "retrying",
            EventKind::Succeeded { .. } => "succeeded",
            EventKind::Failed { .. } => "failed",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Snoozed { .. } => "snoozed",
        }
    }
}

/// A hook registered on the builder: called with each of this node's
/// events that `wants` accepts.
pub(crate) struct Hook {
    pub(crate) wants: fn(&EventKind) -> bool,
    pub(crate) call: Box<dyn Fn(&Event) + Send + Sync>,
}

/// What started an execution on this node: remembered until it ends, so
/// that its progress and end can name its handler without a query.
#[derive(Clone)]
struct Origin {
    handler: String,
    job: Option<String>,
    attempt: u32,
}

/// Events sent to other nodes at most this large (PostgreSQL's limit for a
/// notice payload is 8,000 bytes).
const NOTICE_BYTES: usize = 7_900;
/// How long a node trusts its last look at whether any node hears events:
/// a new subscriber on another node hears this one's events within it.
const HEARD_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a deferred event waits for [`Hub::flush`] before it is
/// announced anyway.
/// Long enough that it is only a safety net: the relay and the
/// `Supervisor` methods flush at once, and a relay stalled between its
/// commit and its events must not see a dependent's end go out first.
const DEFERRED_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Events a subscriber may fall behind by before it misses some
/// (`RecvError::Lagged`).
const CAPACITY: usize = 16 * 1024;

/// Where events are announced: this node's subscribers, its hooks, and
/// (PostgreSQL) the other nodes.
pub(crate) struct Hub {
    node: String,
    tx: broadcast::Sender<Event>,
    origins: Mutex<HashMap<Uuid, Origin>>,
    hooks: Option<mpsc::UnboundedSender<Vec<Event>>>,
    publish: Option<mpsc::UnboundedSender<Vec<Event>>>,
    /// Set up by the first subscription: other nodes' events.
    remote: tokio::sync::OnceCell<()>,
    /// `cancelled` events of executions cancelled before they started,
    /// heard from the store as their transactions commit and announced by
    /// [`Hub::flush`]: after the events of what caused them (a parent's
    /// end, in the relay's batch), or within [`DEFERRED_FOR`].
    deferred: Mutex<Vec<Event>>,
    nudge: Arc<tokio::sync::Notify>,
    /// Held while one batch goes to the subscribers and the hooks, so that
    /// both hear concurrent batches in the same order.
    emitting: Mutex<()>,
    store: Arc<dyn Store>,
    /// Its tasks (publishing, the deferred flush, hearing other nodes):
    /// aborted with the hub. The hooks' task is not among them: it ends
    /// when the hub drops its channel, once it has run the hooks on what
    /// was sent.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()) {
            t.abort();
        }
    }
}

impl Hub {
    /// A hub for `node`; the hook and publisher tasks start here (there are
    /// none without hooks, or on a store that cannot publish).
    pub(crate) fn start(node: String, store: Arc<dyn Store>, hooks: Vec<Hook>) -> Arc<Hub> {
        let mut tasks = Vec::new();
        let hooks = (!hooks.is_empty()).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_hooks(hooks, rx));
            tx
        });
        let publish = store.publishes_events().then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(publish(store.clone(), rx)));
            tx
        });
        let nudge: Arc<tokio::sync::Notify> = Arc::default();
        let hub = Arc::new_cyclic(|weak: &Weak<Hub>| {
            tasks.push(tokio::spawn(flush_deferred(weak.clone(), nudge.clone())));
            Hub {
                node,
                tx: broadcast::channel(CAPACITY).0,
                origins: Mutex::default(),
                hooks,
                publish,
                remote: tokio::sync::OnceCell::new(),
                deferred: Mutex::default(),
                nudge,
                emitting: Mutex::default(),
                store: store.clone(),
                tasks: Mutex::new(tasks),
            }
        });
        let weak = Arc::downgrade(&hub);
        store.on_unstarted_cancels(Box::new(move |cancels| match weak.upgrade() {
            Some(hub) => {
                hub.defer(cancels);
                true
            }
            None => false,
        }));
        hub
    }

    /// Executions were cancelled before they started: their events wait
    /// for [`Hub::flush`].
    pub(crate) fn defer(&self, cancels: &[crate::store::UnstartedCancel]) {
        if !self.heard() {
            return;
        }
        let events = cancels.iter().map(|c| cancelled(&self.node, c));
        self.lock_deferred().extend(events);
        self.nudge.notify_one();
    }

    /// Announces the deferred events (executions cancelled before they
    /// started), in the order their transactions committed.
    pub(crate) fn flush(&self) {
        let events = std::mem::take(&mut *self.lock_deferred());
        self.emit(events);
    }

    fn lock_deferred(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether anyone hears this node's events: subscribers, hooks, or
    /// other nodes. Without any, events are not even built.
    pub(crate) fn heard(&self) -> bool {
        self.publish.is_some() || self.hooks.is_some() || self.tx.receiver_count() > 0
    }

    /// A new subscription; the first one starts hearing other nodes, and
    /// returns once their events are heard.
    pub(crate) async fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Event> {
        let rx = self.tx.subscribe();
        self.remote
            .get_or_init(|| async {
                match self.store.listen_events().await {
                    Ok(Some(notices)) => {
                        let hub = Arc::downgrade(self);
                        let task = tokio::spawn(hear_others(notices, hub));
                        self.tasks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(task);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        error = %crate::error_chain(&e),
                        "cannot hear other nodes' events; this node's only"
                    ),
                }
            })
            .await;
        rx
    }

    /// An event about `id` now, from this node.
    fn event(&self, id: Uuid, origin: Option<&Origin>, kind: EventKind) -> Event {
        Event {
            execution_id: id,
            handler: origin.map(|o| o.handler.clone()).unwrap_or_default(),
            job: origin.and_then(|o| o.job.clone()),
            node: self.node.clone(),
            at: crate::model::now_micros(),
            kind,
        }
    }

    /// Announces this node's events.
    pub(crate) fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let _one_at_a_time = self.emitting.lock().unwrap_or_else(|e| e.into_inner());
        if self.tx.receiver_count() > 0 {
            for e in &events {
                let _ = self.tx.send(e.clone());
            }
        }
        match (&self.publish, &self.hooks) {
            (Some(publish), Some(hooks)) => {
                let _ = publish.send(events.clone());
                let _ = hooks.send(events);
            }
            (Some(to), None) | (None, Some(to)) => {
                let _ = to.send(events);
            }
            (None, None) => {}
        }
    }

    /// Runs were inserted.
    pub(crate) fn enqueued(&self, runs: impl IntoIterator<Item = Enqueued>) {
        if !self.heard() {
            return;
        }
        let events = runs.into_iter().map(|r| enqueued(&self.node, r)).collect();
        self.emit(events);
    }

    /// This node started execution `id`.
    pub(crate) fn started(&self, id: Uuid, handler: &str, job: &str, attempt: u32, mode: Mode) {
        let origin = Origin {
            handler: handler.to_string(),
            job: Some(job.to_string()).filter(|j| !j.is_empty()),
            attempt,
        };
        if self.heard() {
            let e = self.event(id, Some(&origin), EventKind::Started { attempt, mode });
            self.emit(vec![e]);
        }
        self.lock().insert(id, origin);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Origin>> {
        self.origins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A relay batch was committed: its progress reports and its ends.
    pub(crate) async fn written(
        &self,
        progress: &[(Uuid, crate::model::ProgressState)],
        ends: Ends<'_>,
    ) {
        let heard = self.heard();
        let mut events = Vec::new();
        let mut origins: Vec<Option<Origin>> = {
            let mut map = self.lock();
            if heard {
                events.reserve(progress.len() + ends.finished.len());
                for (id, p) in progress {
                    let Some(origin) = map.get(id) else { continue };
                    let kind = EventKind::Progress {
                        percent: p.percent,
                        message: p.message.clone(),
                        done: p.done,
                        total: p.total,
                    };
                    events.push(self.event(*id, Some(origin), kind));
                }
            }
            // Ended executions are forgotten whether or not anyone hears,
            // and so is one whose end the store refused (another node had
            // rescued it): no `Finished` comes for that one.
            let ended: Vec<Option<Origin>> =
                ends.finished.iter().map(|f| map.remove(&f.id)).collect();
            for c in ends.completions {
                map.remove(&c.id);
            }
            ended
        };
        if !heard {
            self.flush();
            return;
        }
        // An execution this node did not start (rescued from a dead node):
        // its row says what it was.
        for (f, origin) in ends.finished.iter().zip(origins.iter_mut()) {
            if origin.is_none() {
                if let Ok(Some(e)) = self.store.execution(f.id).await {
                    *origin = Some(Origin {
                        handler: e.handler,
                        job: e.job,
                        attempt: e.attempt,
                    });
                }
            }
        }
        let completions: HashMap<Uuid, &crate::store::Completion> =
            ends.completions.iter().map(|c| (c.id, c)).collect();
        for (f, origin) in ends.finished.iter().zip(&origins) {
            let c = completions.get(&f.id);
            let attempt = origin.as_ref().map_or(0, |o| o.attempt);
            let error = || {
                c.and_then(|c| c.error.clone())
                    .unwrap_or_else(|| f.status.as_str().to_string())
            };
            use crate::model::Status;
            let kind = match (f.status, f.retry, f.retry_at) {
                (Status::Snoozed, Some(next_id), Some(until)) => {
                    EventKind::Snoozed { next_id, until }
                }
                (_, Some(next_id), Some(next_run_at)) => EventKind::Retrying {
                    attempt,
                    error: error(),
                    next_id,
                    next_run_at,
                },
                (Status::Succeeded, _, _) => EventKind::Succeeded {
                    attempt,
                    output: c.and_then(|c| c.output.clone()),
                },
                (Status::Cancelled, _, _) => EventKind::Cancelled {
                    reason: c.and_then(|c| c.error.clone()),
                },
                _ => EventKind::Failed {
                    attempt,
                    error: error(),
                },
            };
            events.push(self.event(f.id, origin.as_ref(), kind));
        }
        self.emit(events);
        // Dependents these ends cancelled.
        self.flush();
    }
}

/// Announces deferred events that no [`Hub::flush`] took within
/// [`DEFERRED_FOR`] of their commit.
/// It holds no strong reference while it waits, so that the hub can drop.
async fn flush_deferred(hub: Weak<Hub>, nudge: Arc<tokio::sync::Notify>) {
    loop {
        nudge.notified().await;
        tokio::time::sleep(DEFERRED_FOR).await;
        match hub.upgrade() {
            Some(hub) => hub.flush(),
            None => return,
        }
    }
}

/// A run as inserted, for its `enqueued` event.
pub(crate) struct Enqueued {
    pub(crate) id: Uuid,
    pub(crate) handler: String,
    pub(crate) job: Option<String>,
    pub(crate) run_at: Micros,
    pub(crate) queue: String,
}

impl From<&crate::model::Execution> for Enqueued {
    fn from(e: &crate::model::Execution) -> Self {
        Enqueued {
            id: e.id,
            handler: e.handler.clone(),
            job: e.job.clone(),
            run_at: e.run_at.micros(),
            queue: e.queue.clone(),
        }
    }
}

impl crate::store::UnstartedCancel {
    /// `e`'s cancel, if it is cancelled (as a run whose upstream had
    /// already failed is, in the transaction that inserts it).
    pub(crate) fn of(e: &crate::model::Execution) -> Option<Self> {
        (e.status == crate::model::Status::Cancelled).then(|| Self {
            id: e.id,
            handler: e.handler.clone(),
            job: e.job.clone(),
            reason: e.cancel_reason.clone().unwrap_or_default(),
        })
    }
}

impl From<&crate::model::NewExecution> for Enqueued {
    fn from(e: &crate::model::NewExecution) -> Self {
        Enqueued {
            id: e.id,
            handler: e.handler.clone(),
            job: e.job.clone(),
            run_at: e.run_at,
            queue: e.queue.clone(),
        }
    }
}

/// What a relay batch ended.
pub(crate) struct Ends<'a> {
    pub(crate) finished: &'a [Finished],
    pub(crate) completions: &'a [crate::store::Completion],
}

/// Calls the hooks, one event at a time, in order; a hook that panics is
/// reported and the others go on.
async fn run_hooks(hooks: Vec<Hook>, mut rx: mpsc::UnboundedReceiver<Vec<Event>>) {
    while let Some(events) = rx.recv().await {
        for e in &events {
            for hook in hooks.iter().filter(|h| (h.wants)(&e.kind)) {
                let call = std::panic::AssertUnwindSafe(|| (hook.call)(e));
                if let Err(p) = std::panic::catch_unwind(call) {
                    let message = jobvisor_worker::handler::panic_message(p.as_ref());
                    tracing::error!(event = e.kind.name(), execution = %e.execution_id, panic = %message, "an event hook panicked");
                }
            }
        }
    }
}

/// Sends this node's events to the others, in notices of at most
/// [`NOTICE_BYTES`]; an event too large for one is sent without its output,
/// then with its error cut.
async fn publish(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Vec<Event>>) {
    let mut payloads = Vec::new();
    // Whether a node hears, as last asked, and until when that answer holds.
    let mut heard = (false, tokio::time::Instant::now());
    loop {
        let Some(events) = rx.recv().await else {
            return;
        };
        let mut pending = events;
        while let Ok(more) = rx.try_recv() {
            pending.extend(more);
        }
        // NOTIFY costs every listening session, and commits that notify
        // queue behind one lock: with no node hearing, publish nothing.
        let now = tokio::time::Instant::now();
        if now >= heard.1 {
            let yes = store.events_heard().await.unwrap_or_else(|e| {
                tracing::warn!(error = %crate::error_chain(&e), "cannot tell whether a node hears events");
                true
            });
            heard = (yes, now + HEARD_FOR);
        }
        if !heard.0 {
            continue;
        }
        batch(pending, &mut payloads);
        for p in payloads.drain(..) {
            if let Err(e) = store.publish_events(&p).await {
                tracing::warn!(error = %crate::error_chain(&e), "cannot send events to other nodes");
            }
        }
    }
}

/// `events` as notice payloads (JSON arrays, each under
/// [`NOTICE_BYTES`]), added to `payloads`.
fn batch(events: Vec<Event>, payloads: &mut Vec<String>) {
    let mut payload = String::from("[");
    for e in events {
        let json = fitted(e);
        if payload.len() + json.len() + 2 > NOTICE_BYTES && payload.len() > 1 {
            payload.push(']');
            payloads.push(std::mem::replace(&mut payload, String::from("[")));
        }
        if payload.len() > 1 {
            payload.push(',');
        }
        payload.push_str(&json);
    }
    if payload.len() > 1 {
        payload.push(']');
        payloads.push(payload);
    }
}

/// Where a command's events go.
#[async_trait::async_trait]
pub(crate) trait Announce: Send + Sync {
    /// Whether anyone hears: without, events are not even built (nor the
    /// rows read that they are built from).
    fn heard(&self) -> bool;
    /// Runs were just inserted.
    fn enqueued(&self, runs: Vec<Enqueued>);
    /// Executions were cancelled before they started.
    fn cancelled(&self, cancels: &[crate::store::UnstartedCancel]);
    /// Sends what was announced (and what the store reported cancelled)
    /// in the order it happened.
    async fn flush(&self);
}

#[async_trait::async_trait]
impl Announce for Hub {
    fn heard(&self) -> bool {
        Hub::heard(self)
    }

    fn enqueued(&self, runs: Vec<Enqueued>) {
        Hub::enqueued(self, runs)
    }

    fn cancelled(&self, cancels: &[crate::store::UnstartedCancel]) {
        self.defer(cancels)
    }

    async fn flush(&self) {
        Hub::flush(self)
    }
}

/// Announces to the nodes what a program that is not a node (a CLI
/// command) did to executions: on PostgreSQL, published while a node
/// hears; on SQLite, nothing, as no other process hears. Its events name
/// `origin` (`cli@HOST`) as their node.
pub(crate) struct Announcer {
    origin: String,
    store: Arc<dyn Store>,
    /// What it announces, in the order it happened; `None`: nobody hears.
    events: Option<Arc<Mutex<Vec<Event>>>>,
}

impl Announcer {
    /// One for `store`; from now on it hears the executions `store`
    /// cancels before they start.
    pub(crate) async fn new(store: Arc<dyn Store>, origin: String) -> Announcer {
        let heard = store.publishes_events() && store.events_heard().await.unwrap_or(false);
        if !heard {
            return Announcer {
                origin,
                store,
                events: None,
            };
        }
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let (sink, node) = (Arc::downgrade(&events), origin.clone());
        store.on_unstarted_cancels(Box::new(move |cancels| {
            let Some(events) = sink.upgrade() else {
                return false;
            };
            let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
            events.extend(cancels.iter().map(|c| cancelled(&node, c)));
            true
        }));
        Announcer {
            origin,
            store,
            events: Some(events),
        }
    }

    fn push(&self, more: impl IntoIterator<Item = Event>) {
        if let Some(events) = &self.events {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(more);
        }
    }
}

#[async_trait::async_trait]
impl Announce for Announcer {
    fn heard(&self) -> bool {
        self.events.is_some()
    }

    fn enqueued(&self, runs: Vec<Enqueued>) {
        self.push(runs.into_iter().map(|r| enqueued(&self.origin, r)));
    }

    fn cancelled(&self, cancels: &[crate::store::UnstartedCancel]) {
        self.push(cancels.iter().map(|c| cancelled(&self.origin, c)));
    }

    async fn flush(&self) {
        let Some(events) = &self.events else { return };
        let events = std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
        let mut payloads = Vec::new();
        batch(events, &mut payloads);
        for p in payloads {
            if let Err(e) = self.store.publish_events(&p).await {
                tracing::warn!(error = %crate::error_chain(&e), "cannot send events to the nodes");
            }
        }
    }
}

/// The event of run `r`'s insert, from `node`.
fn enqueued(node: &str, r: Enqueued) -> Event {
    Event {
        execution_id: r.id,
        handler: r.handler,
        job: r.job,
        node: node.to_string(),
        at: crate::model::now_micros(),
        kind: EventKind::Enqueued {
            run_at: r.run_at,
            queue: r.queue,
        },
    }
}

/// The event of an execution cancelled before it started, from `node`.
fn cancelled(node: &str, c: &crate::store::UnstartedCancel) -> Event {
    Event {
        execution_id: c.id,
        handler: c.handler.clone(),
        job: c.job.clone(),
        node: node.to_string(),
        at: crate::model::now_micros(),
        kind: EventKind::Cancelled {
            reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
        },
    }
}

/// An event's JSON, made to fit a notice.
fn fitted(mut e: Event) -> String {
    let json = serde_json::to_string(&e).expect("events serialize");
    if json.len() < NOTICE_BYTES - 2 {
        return json;
    }
    match &mut e.kind {
        EventKind::Succeeded { output, .. } => *output = None,
        EventKind::Failed { error, .. } | EventKind::Retrying { error, .. } => cut(error, 2_000),
        EventKind::Cancelled { reason: Some(r) } => cut(r, 2_000),
        EventKind::Progress {
            message: Some(m), ..
        } => cut(m, 2_000),
        _ => {}
    }
    cut(&mut e.handler, 1_000);
    if let Some(j) = &mut e.job {
        cut(j, 1_000);
    }
    serde_json::to_string(&e).expect("events serialize")
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
}

/// Rebroadcasts other nodes' events to this node's subscribers, until the
/// hub is gone.
async fn hear_others(mut notices: mpsc::UnboundedReceiver<String>, hub: Weak<Hub>) {
    loop {
        let Some(payload) = notices.recv().await else {
            return;
        };
        let Some(hub) = hub.upgrade() else { return };
        match serde_json::from_str::<Vec<Event>>(&payload) {
            Ok(events) => {
                for e in events.into_iter().filter(|e| e.node != hub.node) {
                    let _ = hub.tx.send(e);
                }
            }
            Err(e) => tracing::debug!(error = %e, "ignoring an unreadable events notice"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use crate::store::Completion;

    #[tokio::test]
    async fn an_execution_is_forgotten_when_it_ends_even_if_the_store_refused_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let hub = Hub::start("n".into(), store.store().clone(), Vec::new());
        let id = Uuid::now_v7();
        hub.started(id, "noop", "", 1, Mode::Inproc);
        assert_eq!(hub.lock().len(), 1);
        // A completion with no `Finished`: another node had rescued it.
        let refused = [Completion::new(id, Outcome::Succeeded, 0)];
        let ends = Ends {
            finished: &[],
            completions: &refused,
        };
        hub.written(&[], ends).await;
        assert!(hub.lock().is_empty());
    }
}
