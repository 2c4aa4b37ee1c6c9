//! What the engine's actors share, and nothing else: their messages, the
//! mailboxes' one way of sending that never waits, and the vital signs the
//! actors write for a watchdog and metrics. A leaf: it imports no other
//! module of the engine, and they all import it.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What the dispatcher is told.
#[derive(Debug)]
pub(crate) enum ToDispatcher {
    /// Work may be due: claim now rather than at the next poll.
    Wake,
    /// The database changed (SQLite, any process): look for due work now,
    /// with a read, rather than at the next poll.
    Look,
    /// Stop a running execution (first reason wins).
    Cancel {
        /// The execution.
        id: Uuid,
        /// Why.
        reason: String,
    },
    /// An execution (a retry this node scheduled) comes due then: poll
    /// by then.
    DueAt(crate::model::Micros),
    /// Whether every write by another process is announced (SQLite's WAL
    /// watch): then an idle dispatcher polls rarely, and otherwise only
    /// when the earliest pending execution comes due.
    Watched(bool),
    /// Fault injection for tests: panic.
    Panic,
}

/// How often an idle dispatcher polls while the database is watched: a
/// safety net only, as every other process's write is announced and the
/// earliest pending execution's due time is slept until.
pub(crate) const QUIET_POLL: Duration = Duration::from_secs(5);

/// What the scheduler is told.
#[derive(Debug)]
pub(crate) enum ToScheduler {
    /// A job was added, changed or removed.
    JobsChanged,
    /// Whether every write by another process is announced (SQLite's WAL
    /// watch, which then also sends `JobsChanged`): the poll cap is then
    /// `QUIET_CAP`, a safety net only.
    Watched(bool),
    /// The supervisor is stopping.
    Stop,
    /// Fault injection for tests: panic.
    Panic,
}

/// What maintenance is told.
#[derive(Debug)]
pub(crate) enum ToMaintenance {
    /// The supervisor is stopping.
    Stop,
    /// Fault injection for tests: panic.
    Panic,
}

/// How the loops are doing, for a watchdog and for metrics: written by the
/// actors, read by anyone.
pub(crate) struct Vitals {
    /// When the scheduler last went round its loop (µs).
    pub(crate) scheduler: AtomicI64,
    /// When the dispatcher last went round its loop (µs).
    pub(crate) dispatcher: AtomicI64,
    /// Executions running on this node.
    running: AtomicUsize,
    /// Executions started on this node so far.
    runs: AtomicU64,
}

impl Vitals {
    /// Both loops last went round at `now` (µs); nothing ran yet.
    pub(crate) fn new(now: i64) -> Vitals {
        Vitals {
            scheduler: now.into(),
            dispatcher: now.into(),
            running: 0.into(),
            runs: 0.into(),
        }
    }

    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    pub(crate) fn count_start(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub(crate) fn set_running(&self, n: usize) {
        self.running.store(n, Ordering::Relaxed);
    }
}

/// Sends `msg` without waiting, and drops it if the mailbox is full: the
/// actor then has work queued and will look anyway (wakes are idempotent;
/// a cancel is also in the database, which maintenance polls). A message
/// that must arrive (a stop) is sent with `send().await` instead.
pub(crate) fn tell_or_drop<T: std::fmt::Debug>(to: &mpsc::Sender<T>, msg: T) {
    if let Err(mpsc::error::TrySendError::Full(msg)) = to.try_send(msg) {
        tracing::debug!(?msg, "mailbox full; dropped");
    }
}
