//! Executions: their mode and status, as inserted, as stored, and their logs.

use super::labels::{Meta, Origin};
use super::outcome::RetryPolicy;
use super::schema::level_schema;
use super::status::{Mode, Status};
use super::time::{Micros, Timestamp};
use super::value::{parse_name, ValueError};
use jobvisor_worker::protocol::Level;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A request to run a handler once.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// // What RunSpec becomes: the row as inserted.
/// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// let e = sup.store().execution(id).await?.unwrap();
/// assert_eq!((e.attempt, e.max_attempts), (1, 1));
/// # Ok(()) }
/// ```
#[allow(missing_docs)]
pub struct NewExecution {
    /// Chosen by the caller (time-ordered UUIDv7).
    pub id: Uuid,
    /// The job it belongs to; `None` for an ad-hoc run.
    pub job: Option<String>,
    pub handler: String,
    /// Inproc or process.
    pub mode: Mode,
    pub payload: Value,
    pub retry: RetryPolicy,
    /// Wall-clock budget.
    pub timeout_ms: Option<u64>,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time.
    pub run_at: Micros,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The attempt this one retries.
    pub previous_id: Option<Uuid>,
    /// The queue it waits in.
    pub queue: String,
    /// The scheduled occurrence it runs (unique per job), if any.
    pub occurrence: Option<Micros>,
    /// Its unique key, if it has one.
    pub unique: Option<UniqueKey>,
    /// Its concurrency key: the queue's key limit caps how many executions
    /// with the same key run at once.
    pub concurrency_key: Option<String>,
    /// Executions it runs after (it waits until they have all ended).
    pub after: Vec<Uuid>,
    /// What its parents' ends must be for it to run.
    pub after_policy: AfterPolicy,
    /// The workflow and step it is, if it is a workflow's step.
    pub step: Option<(Uuid, String)>,
    /// How it came to be.
    pub origin: Origin,
    /// Its meta (checked: [`super::check_meta`]).
    pub meta: Meta,
    /// Its tags (checked: [`super::check_tags`]).
    pub tags: Vec<String>,
    /// Its trace: the caller's, carried on (`None`: none given; one is
    /// started when the store inserts it, if traces are exported).
    pub trace: Option<super::TraceContext>,
}

/// When an execution with parents runs.
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!("finished".parse::<AfterPolicy>().unwrap(), AfterPolicy::Finished);
/// assert_eq!(AfterPolicy::default(), AfterPolicy::Success);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AfterPolicy {
    /// Only if every parent succeeded; if one fails for good or is
    /// cancelled, it is cancelled (`upstream ID failed`), and so are its
    /// own dependents of this policy.
    #[default]
    Success,
    /// Once every parent has ended, however.
    Finished,
    /// Only if every parent, a condition, succeeded answering `true` (or
    /// nothing, as a plain program that exits 0 does). One that answered
    /// `false` skips it (status `skipped`); one that failed fails it with
    /// its error; one cancelled cancels it. A job's `--condition` runs
    /// before each occurrence this way.
    Condition,
}

impl AfterPolicy {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(AfterPolicy::Finished.as_str(), "finished");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            AfterPolicy::Success => "success",
            AfterPolicy::Finished => "finished",
            AfterPolicy::Condition => "condition",
        }
    }
}

impl fmt::Display for AfterPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AfterPolicy {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [
            AfterPolicy::Success,
            AfterPolicy::Finished,
            AfterPolicy::Condition,
        ]
        .map(|p| (p.as_str(), p));
        parse_name("after policy", "success, finished or condition", &names, s)
    }
}

/// A unique key: while an execution holding it is pending or running (and
/// for `hold_ms` after it ends, if set), another enqueue with the same key
/// creates nothing and gets the holder instead. Its retries keep the key.
///
/// ```
/// use jobvisor::model::*;
/// // At most one report per customer per hour.
/// let key = UniqueKey { key: "report:42".into(), hold_ms: Some(3_600_000), replace: false };
/// # let _ = key;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueKey {
    /// The key.
    pub key: String,
    /// How long after the holder ends the key still counts (a throttle).
    pub hold_ms: Option<u64>,
    /// A duplicate replaces instead: the payload and due time of a holder
    /// that has not started, or else of the one execution that waits to
    /// follow the running holder (made if there is none).
    pub replace: bool,
}

/// What an enqueue made of one execution.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// let spec = || jobvisor::RunSpec::new("noop", serde_json::Value::Null).unique_key("k");
/// let out = sup.submit_many(vec![spec(), spec()]).await?;
/// assert_eq!((out[0].duplicate, out[1].duplicate), (false, true));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Enqueued {
    /// The execution inserted, or for a duplicate the one holding its key.
    pub id: Uuid,
    /// Whether its unique key was held, so that nothing was inserted.
    pub duplicate: bool,
    /// Whether, as a duplicate, it replaced the payload and due time of
    /// execution `id` (`replace`). Written only when it did, so that a
    /// duplicate reads `{"id": ..., "duplicate": true}` as pinned.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
}

/// The default queue.
pub const DEFAULT_QUEUE: &str = "default";

/// The latest progress of an execution.
///
/// ```
/// use jobvisor::model::*;
/// let mut p = ProgressState::default();
/// p.merge(&jobvisor_worker::Progress { done: Some(3), total: Some(10), ..Default::default() });
/// p.merge(&jobvisor_worker::Progress { message: Some("copying".into()), ..Default::default() });
/// assert_eq!((p.done, p.total, p.message.as_deref()), (Some(3), Some(10), Some("copying")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressState {
    /// 0..=100.
    pub percent: Option<f64>,
    /// What the job is doing.
    pub message: Option<String>,
    /// Units done.
    pub done: Option<i64>,
    /// Units in all.
    pub total: Option<i64>,
    /// Free-form detail, the last JSON object reported (at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

impl ProgressState {
    /// Folds a newer report in: fields it carries replace older values.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// let mut p = ProgressState { percent: Some(10.0), ..Default::default() };
    /// p.merge(&jobvisor_worker::Progress { percent: Some(20.0), ..Default::default() });
    /// assert_eq!(p.percent, Some(20.0));
    /// ```
    pub fn merge(&mut self, p: &jobvisor_worker::Progress) {
        if p.percent.is_some() {
            self.percent = p.percent;
        }
        if p.message.is_some() {
            self.message.clone_from(&p.message);
        }
        if let Some(d) = p.done {
            self.done = Some(d.min(i64::MAX as u64) as i64);
        }
        if let Some(t) = p.total {
            self.total = Some(t.min(i64::MAX as u64) as i64);
        }
        if p.data.is_some() {
            self.data.clone_from(&p.data);
        }
    }
}

/// One execution (one attempt of a job).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// let id = sup.enqueue(jobvisor::RunSpec::new("echo", serde_json::json!([1, 2]))).await?;
/// use jobvisor::{model::Execution, Status};
/// let e: Execution = sup.store().execution(id).await?.unwrap();
/// assert_eq!((e.handler.as_str(), e.status, e.payload.clone()), ("echo", Status::Pending, serde_json::json!([1, 2])));
/// assert!(e.job.is_none(), "an ad-hoc run");
/// # Ok(()) }
/// ```
#[allow(missing_docs)]
pub struct Execution {
    pub id: Uuid,
    /// The job it belongs to; `None` for an ad-hoc run.
    pub job: Option<String>,
    pub handler: String,
    pub mode: Mode,
    pub status: Status,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The attempt this one retries.
    pub previous_id: Option<Uuid>,
    /// The attempt that retried this one.
    pub next_id: Option<Uuid>,
    pub payload: Value,
    /// In a list, `payload` was cut: it is the beginning of its JSON text,
    /// as a string; the execution's own route has it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// Higher runs first.
    pub priority: i32,
    /// The queue it waits in.
    pub queue: String,
    /// Its unique key, if it has one.
    pub unique_key: Option<String>,
    /// Its concurrency key, if it has one.
    pub concurrency_key: Option<String>,
    /// Snoozes in its chain before it.
    pub snoozes: u32,
    /// How it came to be.
    pub origin: Origin,
    /// Its meta: string values by key, to be found by (`--meta K=V`).
    pub meta: Meta,
    /// Its tags, to be found by (`--tag T`).
    pub tags: Vec<String>,
    /// With parents: what their ends must be for it to run.
    pub after_policy: Option<AfterPolicy>,
    /// Parents that have not ended yet (while `waiting`).
    pub waiting_on: u64,
    /// The workflow it is a step of.
    pub workflow_id: Option<Uuid>,
    /// Its step's name in that workflow.
    pub step: Option<String>,
    /// The scheduled occurrence it runs, if any: the due time in
    /// microseconds, or for a daemon its generation number.
    pub occurrence: Option<i64>,
    /// Wall-clock budget.
    pub timeout_ms: Option<u64>,
    /// When it was inserted.
    pub enqueued_at: Timestamp,
    pub run_at: Timestamp,
    /// When a node claimed it.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The node that ran it.
    pub node: Option<String>,
    /// The child's pid (process mode).
    pub pid: Option<i64>,
    /// The child's exit code.
    pub exit_code: Option<i64>,
    /// The signal that ended the child (`SIGKILL`).
    pub signal: Option<String>,
    pub progress: ProgressState,
    /// Output on success.
    pub output: Option<Value>,
    /// In a list, `output` was cut: it is the beginning of its JSON text,
    /// as a string; the execution's own route has it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// Why it failed or how it was cancelled.
    pub error: Option<String>,
    /// Whether the timeout ended it.
    pub timed_out: bool,
    /// Whether its supervisor stopped under it.
    pub interrupted: bool,
    /// When a cancel was requested.
    pub cancel_requested_at: Option<Timestamp>,
    /// Why.
    pub cancel_reason: Option<String>,
    /// How the cancel ended it: `cooperative`, `sigterm`, `sigkill`,
    /// `abort` (inproc), `before-start`.
    pub cancel_outcome: Option<String>,
    /// Duration in milliseconds, once finished.
    pub duration_ms: Option<f64>,
}

/// One stored log line.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// fn show(line: &jobvisor::model::LogEntry) -> String {
///     format!("{} {:>5} {}", line.ts, line.level, line.message)
/// }
/// ```
#[allow(missing_docs)]
pub struct LogEntry {
    /// Position within the execution, from 1.
    pub seq: i64,
    /// When the supervisor received it.
    pub ts: Timestamp,
    #[schema(schema_with = level_schema)]
    pub level: Level,
    /// `log` (structured), `stdout`, `stderr` or `supervisor`.
    pub stream: String,
    pub message: String,
    /// Structured context.
    pub fields: Option<Map<String, Value>>,
}

/// Log streams.
pub mod stream {
    /// A structured `log` message (either mode).
    pub const LOG: &str = "log";
    /// A plain line on the child's stdout.
    pub const STDOUT: &str = "stdout";
    /// A line on the child's stderr.
    pub const STDERR: &str = "stderr";
    /// A note the supervisor adds (escalations, leaks).
    pub const SUPERVISOR: &str = "supervisor";
}
