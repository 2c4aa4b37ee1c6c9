//! Values passed to and from the [`super::Store`].

use crate::model::{Micros, Mode, ProgressState, Status};
use serde_json::Value;
use uuid::Uuid;

/// An execution a node has just claimed: what its runner needs.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Execution id.
    pub id: Uuid,
    /// Job name.
    pub job: String,
    /// Handler name.
    pub handler: String,
    /// Mode.
    pub mode: Mode,
    /// Input.
    pub payload: Value,
    /// 1-based attempt.
    pub attempt: u32,
    /// Wall-clock budget.
    pub timeout_ms: Option<u64>,
    /// When it was inserted.
    pub enqueued_at: Micros,
    /// When it was claimed.
    pub started_at: Micros,
    /// A cancel requested before the claim landed.
    pub cancel_requested: bool,
    /// The registered handler's spec (JSON) as of the claim, if registered;
    /// read with the claim so that starting a process costs no extra query.
    pub handler_spec: Option<String>,
}

impl Claimed {
    /// The registered handler, if any.
    pub fn handler_spec(&self) -> Result<Option<crate::model::HandlerSpec>, super::StoreError> {
        self.handler_spec
            .as_deref()
            .map(|s| {
                serde_json::from_str(s).map_err(|e| super::StoreError::Corrupt {
                    what: "handlers.spec",
                    source: Box::new(e),
                })
            })
            .transpose()
    }
}

/// One log line on its way to the database.
#[derive(Clone, Debug)]
pub struct LogRow {
    /// Execution id.
    pub execution_id: Uuid,
    /// Position within the execution, from 1.
    pub seq: i64,
    /// Receive time.
    pub ts: Micros,
    /// Level name.
    pub level: &'static str,
    /// Stream name.
    pub stream: &'static str,
    /// Text.
    pub message: String,
    /// JSON object, if any.
    pub fields: Option<String>,
}

/// The end of an execution, as its runner saw it.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Execution id.
    pub id: Uuid,
    /// Final status (never pending or running).
    pub status: Status,
    /// When it ended.
    pub finished_at: Micros,
    /// Output (JSON) on success.
    pub output: Option<Value>,
    /// Error text.
    pub error: Option<String>,
    /// Whether a retry may follow (for failures).
    pub retryable: bool,
    /// Child's exit code.
    pub exit_code: Option<i32>,
    /// Name of the signal that ended the child.
    pub signal: Option<String>,
    /// The timeout ended it.
    pub timed_out: bool,
    /// The supervisor stopped under it.
    pub interrupted: bool,
    /// How a cancel ended it.
    pub cancel_outcome: Option<String>,
}

impl Completion {
    /// A completion with only the essentials set.
    pub fn new(id: Uuid, status: Status, finished_at: Micros) -> Self {
        Self {
            id,
            status,
            finished_at,
            output: None,
            error: None,
            retryable: false,
            exit_code: None,
            signal: None,
            timed_out: false,
            interrupted: false,
            cancel_outcome: None,
        }
    }
}

/// A relay batch: written in one transaction, logs first.
#[derive(Debug, Default)]
pub struct Batch {
    /// Log lines.
    pub logs: Vec<LogRow>,
    /// Latest progress per execution.
    pub progress: Vec<(Uuid, ProgressState)>,
    /// Child pids.
    pub pids: Vec<(Uuid, i64)>,
    /// Ends of executions.
    pub completions: Vec<Completion>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
            && self.progress.is_empty()
            && self.pids.is_empty()
            && self.completions.is_empty()
    }
}

/// An execution that ended, as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Execution id.
    pub id: Uuid,
    /// Final status.
    pub status: Status,
    /// The retry scheduled for it, if any.
    pub retry: Option<Uuid>,
}

/// Which executions to list.
#[derive(Clone, Debug, Default)]
pub struct ExecFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this handler.
    pub handler: Option<String>,
    /// Only this job.
    pub job: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// What a cancel request found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// No such execution.
    NotFound,
    /// It had already ended.
    AlreadyFinished(Status),
    /// It was pending and is now cancelled.
    CancelledPending,
    /// It is running; its node will stop it.
    Requested,
}

/// A supervisor process, as registered in the database.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Unique per start.
    pub id: String,
    /// Host it runs on.
    pub hostname: String,
    /// Its pid.
    pub pid: i64,
    /// Start time.
    pub started_at: Micros,
    /// Last heartbeat.
    pub heartbeat_at: Micros,
    /// When it stopped cleanly.
    pub stopped_at: Option<Micros>,
}

/// A running execution of another node, for rescue.
#[derive(Clone, Debug)]
pub struct ForeignRunning {
    /// Execution id.
    pub id: Uuid,
    /// The child's pid (process group), if any.
    pub pid: Option<i64>,
    /// Its node, if that node is registered.
    pub node: Option<NodeInfo>,
}
