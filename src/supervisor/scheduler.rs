//! The scheduler actor: runs scheduler passes at the next due time, at
//! least every poll interval (jobs added by other processes), at once when
//! a job changes, and soon after an execution ends (it may be a daemon's).

use super::dispatcher::ToDispatcher;
use super::{tell, Beats};
use crate::model::now_micros;
use crate::scheduler::Planner;
use crate::store::{Finished, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// What the scheduler is told.
#[derive(Debug)]
pub(crate) enum ToScheduler {
    /// A job was added, changed or removed.
    JobsChanged,
    /// The supervisor is stopping.
    Stop,
    /// Fault injection for tests: panic.
    Panic,
}

pub(crate) struct Scheduler {
    pub(super) store: Arc<dyn Store>,
    pub(super) inbox: mpsc::Receiver<ToScheduler>,
    pub(super) finished: broadcast::Receiver<Finished>,
    pub(super) dispatcher: mpsc::Sender<ToDispatcher>,
    pub(super) poll_cap: Duration,
    pub(super) beats: Arc<Beats>,
    pub(super) planner: Planner,
}

impl Scheduler {
    pub(super) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            self.beats
                .scheduler
                .store(now_micros(), std::sync::atomic::Ordering::Relaxed);
            let wait = match self.planner.pass(self.store.as_ref()).await {
                Ok(outcome) => {
                    backoff = Duration::from_millis(100);
                    if outcome.inserted > 0 {
                        tell(&self.dispatcher, ToDispatcher::Wake);
                    }
                    if outcome.more {
                        continue;
                    }
                    self.until_next_due().await
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
                msg = self.inbox.recv() => match msg {
                    Some(ToScheduler::JobsChanged) => false,
                    Some(ToScheduler::Panic) => panic!("fault injected into the scheduler"),
                    Some(ToScheduler::Stop) | None => return,
                },
                r = self.finished.recv() => !matches!(r, Err(broadcast::error::RecvError::Closed)),
            };
            if woke_by_finish {
                tokio::time::sleep(Duration::from_millis(50)).await;
                while self.finished.try_recv().is_ok() {}
            }
        }
    }

    /// How long until the earliest due job, at most the poll cap.
    async fn until_next_due(&self) -> Duration {
        match self.store.next_due().await {
            Ok(Some(t)) => {
                Duration::from_micros((t - now_micros()).max(0) as u64).min(self.poll_cap)
            }
            Ok(None) => self.poll_cap,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading the next due time failed");
                self.poll_cap
            }
        }
    }
}
