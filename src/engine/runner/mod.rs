//! The runners: one per execution mode. Each execution is owned by one task
//! that runs it to its end and returns a [`Completion`](crate::store::Completion).

pub mod cgroup;
mod escalation;
pub mod guardian;
pub mod inproc;
pub mod isolate;
pub mod os;
pub mod pool;
pub mod process;
pub mod transaction;

use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

/// Why an execution is being stopped from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An operator or API asked for it.
    Cancel(String),
    /// The supervisor is shutting down: record it interrupted (retried).
    Shutdown,
}

/// The stop request of one execution: set once, seen by its runner.
#[derive(Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Stop {
    /// Asks the execution to stop; the first reason wins.
    ///
    /// ```
    /// use jobvisor::runner::{Stop, StopReason};
    /// let stop = Stop::default();
    /// stop.request(StopReason::Shutdown);
    /// stop.request(StopReason::Cancel("late".into())); // the first reason wins
    /// assert!(matches!(stop.reason(), Some(StopReason::Shutdown)));
    /// ```
    pub fn request(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why the stop was requested, if it was.
    ///
    /// ```
    /// use jobvisor::runner::{Stop, StopReason};
    /// assert!(Stop::default().reason().is_none());
    /// ```
    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }

    /// Completes when a stop is requested.
    ///
    /// ```
    /// use jobvisor::runner::{Stop, StopReason};
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let stop = Stop::default();
    /// stop.request(StopReason::Shutdown);
    /// rt.block_on(stop.requested()); // already requested: completes at once
    /// ```
    pub async fn requested(&self) {
        self.token.cancelled().await
    }
}

/// Why a runner ended an execution before it finished by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Stop(StopReason),
    Timeout(u64),
    Heartbeat(u64),
}

impl Ending {
    fn cancel_reason(&self) -> String {
        match self {
            Ending::Stop(StopReason::Cancel(r)) => r.clone(),
            Ending::Stop(StopReason::Shutdown) => "supervisor shutting down".into(),
            Ending::Timeout(ms) => format!("timed out after {}", crate::model::format_ms(*ms)),
            Ending::Heartbeat(ms) => format!("no heartbeat for {}", crate::model::format_ms(*ms)),
        }
    }

    /// The outcome and error of an execution that this ending stopped,
    /// when the job itself reported none. `how` says which step ended it
    /// (`cooperative`, `sigterm`, `sigkill`, `abort`).
    fn outcome(&self, how: &'static str) -> (crate::model::Outcome, String) {
        use crate::model::Outcome;
        match self {
            Ending::Stop(StopReason::Cancel(_)) => (
                Outcome::Cancelled { how: Some(how) },
                format!("cancelled ({how})"),
            ),
            Ending::Stop(StopReason::Shutdown) => (
                Outcome::Interrupted,
                format!("interrupted: supervisor shutting down ({how})"),
            ),
            Ending::Timeout(_) => (Outcome::TimedOut, self.cancel_reason()),
            Ending::Heartbeat(_) => (Outcome::Failed { retryable: true }, self.cancel_reason()),
        }
    }

    /// Fills in a completion for an execution that this ending stopped.
    fn apply(&self, c: &mut crate::store::Completion, how: &'static str) {
        let (outcome, error) = self.outcome(how);
        (c.outcome, c.error) = (outcome, Some(error));
    }
}
