//! An execution's mode (where it runs) and status (where it stands).

use super::value::{parse_name, ValueError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an execution runs.
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!("process".parse::<Mode>().unwrap(), Mode::Process);
/// assert!("thread".parse::<Mode>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A tokio task inside the supervisor ("goroutine-style").
    Inproc,
    /// A child worker process ("process-style").
    Process,
}

impl Mode {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Mode::Inproc.as_str(), "inproc");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inproc => "inproc",
            Mode::Process => "process",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [("inproc", Mode::Inproc), ("process", Mode::Process)];
        parse_name("mode", "inproc or process", &names, s)
    }
}

/// An execution's state.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
///
/// ```
/// use jobvisor::model::*;
/// let s: Status = "snoozed".parse().unwrap();
/// assert!(s.is_terminal());
/// assert_eq!(serde_json::to_string(&Status::Running).unwrap(), r#""running""#);
/// ```
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Held back until other executions end (its parents, or the running
    /// holder of its unique key that it follows); then pending.
    Waiting,
    /// Waiting to be claimed.
    Pending,
    /// Held back by an operator (`exec hold`) from pending or waiting: never
    /// claimed until released (`exec release`), when it goes back to where
    /// it stood.
    Held,
    /// Claimed by a node and running.
    Running,
    /// Ended well.
    Succeeded,
    /// Ended badly (a later attempt may follow).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Ended by its handler's request to run again later (`snooze`): a new
    /// attempt follows at the time it asked for, without using a retry.
    Snoozed,
    /// Ended without running: its condition answered `false` (a job's
    /// `--condition`, or the `condition` policy of `--after`).
    Skipped,
}

impl Status {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Status::Cancelled.as_str(), "cancelled");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Pending => "pending",
            Status::Held => "held",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Snoozed => "snoozed",
            Status::Skipped => "skipped",
        }
    }

    /// Whether the execution is over.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(Status::Failed.is_terminal());
    /// assert!(!Status::Waiting.is_terminal());
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed
                | Status::Cancelled
                | Status::Snoozed
                | Status::Skipped
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// Every status, those yet to end first.
    ///
    /// ```
    /// use jobvisor::Status;
    /// assert!(Status::ALL.iter().all(|s| s.as_str().parse::<Status>() == Ok(*s)));
    /// ```
    pub const ALL: [Status; 9] = [
        Status::Waiting,
        Status::Pending,
        Status::Held,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Snoozed,
        Status::Skipped,
    ];
}

impl FromStr for Status {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = Status::ALL.map(|st| (st.as_str(), st));
        let expected =
            "waiting, pending, held, running, succeeded, failed, cancelled, snoozed or skipped";
        parse_name("status", expected, &names, s)
    }
}
