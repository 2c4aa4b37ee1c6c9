//! How an execution ended, and the retry rule with its backoff.

use super::status::Status;
use super::time::Micros;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Retry policy of an execution chain.
///
/// ```
/// use jobvisor::model::*;
/// let policy = RetryPolicy { max_attempts: 4, ..RetryPolicy::default() };
/// let next = Outcome::Failed { retryable: true }.retry(&policy, 1, 0).unwrap();
/// assert_eq!((next.attempt, next.max_attempts), (2, 4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt.
    pub backoff_base_ms: u64,
    /// Upper bound of the delay.
    pub backoff_cap_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 300_000,
        }
    }
}

/// How an execution ended: one value, where a set of flags could contradict
/// itself. [`Outcome::columns`] maps it to the stored columns, and
/// [`Outcome::retry`] decides whether another attempt follows; both are the
/// only places that do.
///
/// ```
/// use jobvisor::model::*;
/// let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
/// assert!(Outcome::Failed { retryable: true }.retry(&policy, 1, 0).is_some());
/// assert!(Outcome::Failed { retryable: false }.retry(&policy, 1, 0).is_none(), "permanent");
/// assert!(Outcome::Failed { retryable: true }.retry(&policy, 3, 0).is_none(), "none left");
/// assert_eq!(Outcome::TimedOut.status(), Status::Failed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ended well.
    Succeeded,
    /// It failed; a `retryable` failure runs again while attempts remain.
    Failed {
        /// Whether another attempt may follow.
        retryable: bool,
    },
    /// Its timeout ended it: a failure that may be retried.
    TimedOut,
    /// A cancel ended it. `how` names the step that did (`cooperative`,
    /// `sigterm`, `sigkill`, `abort`, `before-start`); `None` when the worker
    /// cancelled itself unasked.
    Cancelled {
        /// The step that ended it.
        how: Option<&'static str>,
    },
    /// The supervisor stopped under it (shutdown, a dead node). Not the
    /// job's failure: it always runs again, on an attempt of its own.
    Interrupted,
    /// Its handler asked to run again after `delay_ms`: the next execution
    /// of the chain keeps the attempt number and `max_attempts`.
    Snoozed {
        /// How long from the end until the next execution is due.
        delay_ms: u64,
    },
}

/// Snoozes one execution chain may take; the next one fails it.
pub const MAX_SNOOZES: u32 = 1_000;

/// The longest snooze: a longer delay is cut to it.
pub const MAX_SNOOZE_MS: u64 = 366 * 24 * 3600 * 1000;

/// An outcome as the execution row stores it.
///
/// ```
/// use jobvisor::model::*;
/// let c = Outcome::TimedOut.columns();
/// assert_eq!((c.status, c.timed_out), (Status::Failed, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeColumns {
    /// `status`.
    pub status: Status,
    /// `timed_out`.
    pub timed_out: bool,
    /// `interrupted`.
    pub interrupted: bool,
    /// `cancel_outcome`.
    pub cancel_outcome: Option<&'static str>,
}

/// The next attempt of a failed execution.
///
/// ```
/// use jobvisor::model::*;
/// let r = Outcome::Snoozed { delay_ms: 30_000 }.retry(&RetryPolicy::default(), 1, 0).unwrap();
/// assert_eq!((r.attempt, r.run_at, r.snooze), (1, 30_000_000, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Its attempt number.
    pub attempt: u32,
    /// Attempts in all, counting it (an interruption adds one).
    pub max_attempts: u32,
    /// When it is due.
    pub run_at: Micros,
    /// Whether a snooze asked for it (counted against [`MAX_SNOOZES`]).
    pub snooze: bool,
}

impl Outcome {
    /// The final status.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Outcome::Interrupted.status(), Status::Failed);
    /// assert_eq!(Outcome::Succeeded.status(), Status::Succeeded);
    /// ```
    pub fn status(&self) -> Status {
        self.columns().status
    }

    /// The stored columns.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(Outcome::Interrupted.columns().interrupted);
    /// ```
    pub fn columns(&self) -> OutcomeColumns {
        let (status, timed_out, interrupted, cancel_outcome) = match self {
            Outcome::Succeeded => (Status::Succeeded, false, false, None),
            Outcome::Failed { .. } => (Status::Failed, false, false, None),
            Outcome::TimedOut => (Status::Failed, true, false, None),
            Outcome::Cancelled { how } => (Status::Cancelled, false, false, *how),
            Outcome::Interrupted => (Status::Failed, false, true, None),
            Outcome::Snoozed { .. } => (Status::Snoozed, false, false, None),
        };
        OutcomeColumns {
            status,
            timed_out,
            interrupted,
            cancel_outcome,
        }
    }

    /// Whether attempt `attempt`, which ended so at `finished_at` under
    /// `policy`, runs again, and when.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// // An interruption (a node stopped under it) runs again, adding an attempt.
    /// let r = Outcome::Interrupted.retry(&RetryPolicy::default(), 1, 0).unwrap();
    /// assert_eq!((r.attempt, r.max_attempts), (2, 2));
    /// ```
    pub fn retry(&self, policy: &RetryPolicy, attempt: u32, finished_at: Micros) -> Option<Retry> {
        let next = attempt.saturating_add(1);
        match self {
            Outcome::Interrupted => Some(Retry {
                attempt: next,
                max_attempts: policy.max_attempts.max(next),
                run_at: finished_at,
                snooze: false,
            }),
            Outcome::Snoozed { delay_ms } => Some(Retry {
                attempt,
                max_attempts: policy.max_attempts,
                run_at: finished_at.saturating_add((*delay_ms).min(MAX_SNOOZE_MS) as Micros * 1000),
                snooze: true,
            }),
            Outcome::Failed { retryable: true } | Outcome::TimedOut
                if attempt < policy.max_attempts =>
            {
                Some(Retry {
                    attempt: next,
                    max_attempts: policy.max_attempts,
                    run_at: finished_at
                        .saturating_add(policy.delay_before(next).as_micros() as Micros),
                    snooze: false,
                })
            }
            _ => None,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 = first retry):
    /// exponential, capped, with "equal jitter" (half fixed, half random) so
    /// that a burst of failures does not retry in lockstep.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// use std::time::Duration;
    /// let policy = RetryPolicy { max_attempts: 10, backoff_base_ms: 1_000, backoff_cap_ms: 60_000 };
    /// let d = policy.delay_before(3); // the second retry: about 2 s
    /// assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
    /// assert!(policy.delay_before(30) <= Duration::from_secs(60), "capped");
    /// ```
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(40);
        let full = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_cap_ms);
        let half = full / 2;
        Duration::from_millis(half + fastrand::u64(0..=full - half))
    }
}
