//! The maintenance actor: heartbeats, cancel requests made through the
//! database, rescue of dead nodes' executions, idle pooled workers, and the
//! notices of other nodes (PostgreSQL LISTEN), passed on to whom they
//! concern.

use crate::engine::dispatch::sleep_until_some;
use crate::engine::relay::{Relay, RelayMsg};
use crate::engine::runner::os;
use crate::engine::runner::pool::Pools;
use crate::engine::{tell_or_drop, ToDispatcher, ToMaintenance, ToScheduler, Vitals};
use crate::model::{now_micros, Micros, Outcome};
use crate::store::{Completion, NodeInfo, Notice, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) struct Maintenance {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) node: NodeInfo,
    pub(crate) relay: Relay,
    pub(crate) pools: Arc<Pools>,
    pub(crate) vitals: Arc<Vitals>,
    pub(crate) inbox: mpsc::Receiver<ToMaintenance>,
    pub(crate) dispatcher: mpsc::Sender<ToDispatcher>,
    pub(crate) scheduler: mpsc::Sender<ToScheduler>,
    pub(crate) cancel_poll: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) lease: Duration,
    pub(crate) trim_when_idle: bool,
}

/// How long nothing must have run before an idle service gives back its
/// code pages (see `Config::trim_when_idle`).
const TRIM_AFTER: Duration = Duration::from_secs(30);

/// The most often another process's write (SQLite) has cancels looked for.
const CHANGED_CANCEL_EVERY: Duration = Duration::from_millis(10);

/// The most often another process's write (SQLite) has the scheduler look
/// at jobs.
const CHANGED_JOBS_EVERY: Duration = Duration::from_millis(100);

/// The next notice, or never when there is no listener (SQLite) or it
/// ended.
async fn next_notice(notices: &mut Option<mpsc::UnboundedReceiver<Notice>>) -> Option<Notice> {
    match notices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Maintenance {
    pub(crate) async fn run(mut self, mut notices: Option<mpsc::UnboundedReceiver<Notice>>) {
        // While the database is watched, another process's cancel comes as
        // a change, and the cancel poll is a safety net only.
        let mut cancel_tick = quiet_interval(self.cancel_poll);
        let mut heartbeat_tick = quiet_interval(self.heartbeat);
        let mut rescue_tick = quiet_interval(self.lease / 4);
        let mut pool_tick =
            quiet_interval(crate::idle::idle(crate::engine::runner::pool::IDLE_TIMEOUT) / 4);
        // The first tick comes a period after start-up.
        let trim_after = crate::idle::idle(TRIM_AFTER);
        let mut trim_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + trim_after, trim_after);
        trim_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut trimmed, mut runs_seen) = (false, self.vitals.runs());
        // Another process's writes (SQLite) may come in a stream: cancels
        // are looked for at most every CHANGED_CANCEL_EVERY.
        let mut cancels_looked = tokio::time::Instant::now();
        let mut cancels_due: Option<tokio::time::Instant> = None;
        // And jobs (added or changed by another process) at most every
        // CHANGED_JOBS_EVERY: each look is a scheduler pass.
        let mut jobs_looked = tokio::time::Instant::now();
        let mut jobs_due: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(ToMaintenance::Panic) => panic!("fault injected into maintenance"),
                    Some(ToMaintenance::Stop) | None => return,
                },
                notice = next_notice(&mut notices) => match notice {
                    Some(Notice::Work | Notice::Limits) => tell_or_drop(&self.dispatcher, ToDispatcher::Wake),
                    Some(Notice::Jobs) => {
                        tell_or_drop(&self.scheduler, ToScheduler::JobsChanged);
                        // A job's cap may have risen.
                        tell_or_drop(&self.dispatcher, ToDispatcher::Look);
                    }
                    Some(Notice::Cancel) => self.check_cancels().await,
                    Some(Notice::Changed) => {
                        tell_or_drop(&self.dispatcher, ToDispatcher::Look);
                        jobs_due.get_or_insert(jobs_looked + CHANGED_JOBS_EVERY);
                        if self.vitals.running() > 0 {
                            cancels_due.get_or_insert(cancels_looked + CHANGED_CANCEL_EVERY);
                        }
                    }
                    Some(Notice::Watched) => {
                        self.watched(true).await;
                        cancel_tick = quiet_interval(self.cancel_poll.max(crate::idle::idle(crate::engine::QUIET_POLL)));
                    }
                    None => {
                        notices = None;
                        self.watched(false).await;
                        cancel_tick = quiet_interval(self.cancel_poll);
                    }
                },
                _ = sleep_until_some(jobs_due) => {
                    jobs_due = None;
                    jobs_looked = tokio::time::Instant::now();
                    tell_or_drop(&self.scheduler, ToScheduler::JobsChanged);
                }
                _ = sleep_until_some(cancels_due) => {
                    cancels_due = None;
                    cancels_looked = tokio::time::Instant::now();
                    self.check_cancels().await;
                }
                _ = cancel_tick.tick() => self.check_cancels().await,
                _ = heartbeat_tick.tick() => {
                    if let Err(e) = self.store.heartbeat_node(&self.node.id, now_micros()).await {
                        tracing::warn!(error = %crate::error_chain(&e), "node heartbeat failed");
                    }
                }
                _ = pool_tick.tick() => self.pools.sweep(false).await,
                _ = trim_tick.tick(), if self.trim_when_idle => {
                    // Once after start-up, and once per idle spell: nothing
                    // ran since the last tick (a period ago).
                    let idle = self.vitals.running() == 0 && self.vitals.runs() == runs_seen;
                    if idle && !trimmed {
                        crate::engine::runner::os::release_code_pages();
                        tracing::debug!("idle: code pages given back");
                    }
                    trimmed = idle;
                    runs_seen = self.vitals.runs();
                }
                _ = rescue_tick.tick() => {
                    match rescue(self.store.as_ref(), &self.node, self.lease, &self.relay).await {
                        Ok(0) => {}
                        Ok(_) => tell_or_drop(&self.dispatcher, ToDispatcher::Wake),
                        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "rescue sweep failed"),
                    }
                }
            }
        }
    }

    /// Tells the dispatcher and the scheduler whether every other process's
    /// write is announced (they poll rarely while it is).
    async fn watched(&self, watched: bool) {
        // Sent, not told: unlike a wake, this must arrive.
        let _ = self.dispatcher.send(ToDispatcher::Watched(watched)).await;
        let _ = self.scheduler.send(ToScheduler::Watched(watched)).await;
    }

    /// Passes cancels requested through the database on to the dispatcher.
    /// Cancels of pending executions are applied by whoever asks; only
    /// running ones need this node, so idle there is nothing to look for.
    async fn check_cancels(&self) {
        if self.vitals.running() == 0 {
            return;
        }
        match self.store.cancel_requests(&self.node.id).await {
            Ok(reqs) => {
                for (id, reason) in reqs {
                    tell_or_drop(&self.dispatcher, ToDispatcher::Cancel { id, reason });
                }
            }
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cancel poll failed"),
        }
    }
}

/// A tick every `every`, the first now, delayed rather than bunched after
/// a slow pass.
fn quiet_interval(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Closes running executions of dead nodes as interrupted (retried if
/// attempts remain); returns how many. A node is dead when it stopped, when
/// its process is gone (same host), or when its heartbeat is older than the
/// lease.
pub(crate) async fn rescue(
    store: &dyn Store,
    node: &NodeInfo,
    lease: Duration,
    relay: &Relay,
) -> Result<usize, StoreError> {
    let now = now_micros();
    let lease = lease.as_micros() as Micros;
    let mut rescued = 0;
    for r in store.foreign_running(&node.id).await? {
        let same_host = r.node.as_ref().is_some_and(|n| n.hostname == node.hostname);
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
        relay.send(RelayMsg::Complete(c)).await;
        rescued += 1;
    }
    if rescued > 0 {
        relay.flush().await;
        tracing::warn!(rescued, "closed executions of stopped nodes as interrupted");
    }
    Ok(rescued)
}
