//! Values passed to and from the [`super::Store`].

use crate::model::{Micros, Mode, Outcome, ProgressState, Status};
use serde_json::Value;
use uuid::Uuid;

/// An execution cancelled before it started (pending or waiting), heard
/// when the transaction that cancelled it commits: for its `cancelled`
/// event (see [`super::Store::on_unstarted_cancels`]).
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct UnstartedCancel {
    pub id: Uuid,
    pub handler: String,
    pub job: Option<String>,
    /// The reason given, or else why it was cancelled (`upstream ID
    /// failed`).
    pub reason: String,
}

/// Hears [`UnstartedCancel`]s, in commit order; returns `false` once it
/// wants no more.
#[doc(hidden)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) type UnstartedSink = Box<dyn Fn(&[UnstartedCancel]) -> bool + Send + Sync>;

/// An execution a node has just claimed: what its runner needs.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct Claimed {
    pub id: Uuid,
    pub job: String,
    pub handler: String,
    pub mode: Mode,
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
    /// Its parents' ends and outputs (the protocol's `inputs`).
    pub inputs: Vec<crate::model::Input>,
    /// Snoozes in its chain before it (a snooze past
    /// [`crate::model::MAX_SNOOZES`] fails it).
    pub snoozes: u32,
    /// Its meta, as the worker receives it.
    pub meta: crate::model::Meta,
    /// Its tags, as the worker receives them.
    pub tags: Vec<String>,
    /// Its trace, if it has one (the worker gets its attempt's span as
    /// `traceparent`).
    pub trace: Option<crate::model::TraceContext>,
}

/// What a claim took, and when a rate lets it take more.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct Claims {
    /// The claimed executions, best first.
    pub executions: Vec<Claimed>,
    /// When a queue whose rate held executions back has its next start,
    /// if one did: the dispatcher claims again then instead of polling.
    pub next_token_at: Option<Micros>,
}

impl Claimed {
    /// The registered handler, if any.
    pub fn handler_spec(&self) -> Result<Option<crate::model::HandlerSpec>, super::StoreError> {
        self.handler_spec
            .as_deref()
            .map(|s| {
                serde_json::from_str(s).map_err(|e| super::StoreError::Corrupt {
                    what: "handlers.spec".into(),
                    source: Box::new(e),
                })
            })
            .transpose()
    }
}

/// One log line on its way to the database.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct LogRow {
    pub execution_id: Uuid,
    /// Position within the execution, from 1.
    pub seq: i64,
    pub ts: Micros,
    pub level: &'static str,
    pub stream: &'static str,
    pub message: String,
    /// JSON object, if any.
    pub fields: Option<String>,
}

/// The end of an execution, as its runner saw it.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct Completion {
    pub id: Uuid,
    /// How it ended.
    pub outcome: Outcome,
    /// When it ended.
    pub finished_at: Micros,
    /// Output (JSON) on success.
    pub output: Option<Value>,
    /// Error text.
    pub error: Option<String>,
    /// The child's exit code.
    pub exit_code: Option<i32>,
    /// The name of the signal that ended the child.
    pub signal: Option<String>,
}

impl Completion {
    /// A completion with nothing but its outcome.
    pub fn new(id: Uuid, outcome: Outcome, finished_at: Micros) -> Self {
        Self {
            id,
            outcome,
            finished_at,
            output: None,
            error: None,
            exit_code: None,
            signal: None,
        }
    }

    /// A failure with its error text.
    pub fn failed(id: Uuid, retryable: bool, error: impl Into<String>) -> Self {
        let mut c = Self::new(
            id,
            Outcome::Failed { retryable },
            crate::model::now_micros(),
        );
        c.error = Some(error.into());
        c
    }
}

/// A relay batch: written in one transaction, logs first.
#[derive(Debug, Default)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct Batch {
    pub logs: Vec<LogRow>,
    /// Latest progress per execution.
    pub progress: Vec<(Uuid, ProgressState)>,
    pub pids: Vec<(Uuid, i64)>,
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
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
pub struct Finished {
    pub id: Uuid,
    pub status: Status,
    /// The retry scheduled for it, if any.
    pub retry: Option<Uuid>,
    /// When that retry is due.
    pub retry_at: Option<Micros>,
    /// Whether the transaction that recorded it made other executions
    /// ready to run now: dependents, chained jobs, a unique key's follower,
    /// or a slot under a queue, job or key limit.
    pub released: bool,
}

/// An execution's place in a graph: what it ran after, and what runs
/// after it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Links {
    /// The executions it runs after (the last attempt of each).
    pub parents: Vec<Uuid>,
    /// The executions that run after it.
    pub children: Vec<Uuid>,
}

/// A workflow to insert with its steps' executions.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct NewWorkflow {
    /// Its id (time-ordered UUIDv7).
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its steps as submitted (JSON), kept to show it as it was defined.
    pub spec: Value,
}

/// A stored workflow and where its steps stand.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WorkflowInfo {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was submitted.
    pub created_at: crate::model::Timestamp,
    /// When it was cancelled, if it was.
    pub cancelled_at: Option<crate::model::Timestamp>,
    /// How many steps stand in each status (the last attempt of each).
    pub steps: std::collections::BTreeMap<Status, u64>,
}

/// What cancelling a workflow did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WorkflowCancel {
    /// Steps that had not started, now cancelled.
    pub cancelled: u64,
    /// Running steps whose nodes were asked to stop them.
    pub requested: u64,
}

/// Which executions to list or act on: every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecFilter {
    /// Only these statuses (any of them); all when empty.
    #[serde(deserialize_with = "one_or_many")]
    pub statuses: Vec<Status>,
    /// Only this handler.
    pub handler: Option<String>,
    /// Only this job.
    pub job: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only those this node claimed.
    pub node: Option<String>,
    /// Only those with this unique key.
    pub unique_key: Option<String>,
    /// Only those with this concurrency key.
    pub concurrency_key: Option<String>,
    /// Only those enqueued at or after this time.
    pub since: Option<Micros>,
    /// Only those enqueued before this time.
    pub until: Option<Micros>,
    /// Only those older than this one (keyset pagination: pass the last id
    /// of a page to get the next).
    pub before: Option<Uuid>,
    /// Only those with every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only those with every one of these meta pairs.
    #[serde(default)]
    pub meta: crate::model::Meta,
    /// Only those that came to be this way.
    #[serde(default)]
    pub origin: Option<crate::model::Origin>,
    /// Only the last attempt of each chain (none retried it): a run that
    /// failed three times counts once.
    #[serde(default, rename = "final")]
    pub last_attempt: bool,
    /// At most this many (newest first).
    pub limit: usize,
    /// Cut each payload and output at this many characters (a list for
    /// people, not a way to read every byte of a thousand rows): a cut one
    /// is its JSON text's beginning, as a string, with `payload_truncated`
    /// or `output_truncated` set.
    #[serde(skip)]
    pub clip: Option<usize>,
}

/// A status or a list of them (`"failed"` or `["failed", "cancelled"]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Status>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Status),
        Many(Vec<Status>),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl ExecFilter {
    /// Whether it narrows anything down (a bulk action needs that).
    pub fn narrows(&self) -> bool {
        !self.statuses.is_empty()
            || self.handler.is_some()
            || self.job.is_some()
            || self.queue.is_some()
            || self.node.is_some()
            || self.unique_key.is_some()
            || self.concurrency_key.is_some()
            || self.since.is_some()
            || self.until.is_some()
            || self.before.is_some()
            || !self.tags.is_empty()
            || !self.meta.is_empty()
            || self.origin.is_some()
            || self.last_attempt
    }
}

/// What a retry request found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryRequest {
    /// No such execution.
    NotFound,
    /// Retried: the new attempt.
    Retried(Uuid),
    /// It has not ended, or ended well: nothing to retry.
    NotEnded(Status),
    /// It ended well.
    Succeeded,
    /// It was retried already, by this attempt.
    AlreadyRetried(Uuid),
    /// Its unique key is held by this execution.
    KeyHeld(Uuid),
}

impl RetryRequest {
    /// Why a retry of `id` was refused, in one line (`None`: it was not).
    pub fn refusal(&self, id: Uuid) -> Option<String> {
        Some(match self {
            RetryRequest::Retried(_) => return None,
            RetryRequest::NotFound => format!("no execution {id}"),
            RetryRequest::NotEnded(s) => format!(
                "execution {id} is {s}: only a failed, cancelled or interrupted execution can be retried"
            ),
            RetryRequest::Succeeded => {
                format!("execution {id} succeeded: there is nothing to retry")
            }
            RetryRequest::AlreadyRetried(next) => {
                format!("execution {id} was retried already, as {next} (retry that one)")
            }
            RetryRequest::KeyHeld(holder) => {
                format!("execution {id}'s unique key is held by execution {holder}")
            }
        })
    }
}

/// What a hold or release found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldRequest {
    /// No such execution.
    NotFound,
    /// Done: where the execution stands now (`held` after a hold; after a
    /// release, `pending`, or `waiting` while it still waits on parents or
    /// a unique key's holder).
    Done(Status),
    /// Refused: it is running or has ended, and stands as this.
    Refused(Status),
}

impl HoldRequest {
    /// Why holding (`hold`) or releasing execution `id` was refused, in
    /// one line (`None`: it was not).
    pub fn refusal(&self, id: Uuid, hold: bool) -> Option<String> {
        let verb = if hold { "held" } else { "released" };
        match self {
            HoldRequest::Done(_) => None,
            HoldRequest::NotFound => Some(format!("no execution {id}")),
            HoldRequest::Refused(s) => Some(format!(
                "execution {id} is {s}: only a pending or waiting execution can be {verb}"
            )),
        }
    }
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
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
pub struct NodeInfo {
    /// Unique per start.
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub started_at: Micros,
    pub heartbeat_at: Micros,
    /// When it stopped cleanly.
    pub stopped_at: Option<Micros>,
    /// How many executions it runs at once (`None`: a node from before
    /// nodes said).
    pub concurrency: Option<u32>,
}

/// A running execution of another node, for rescue.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct ForeignRunning {
    pub id: Uuid,
    /// The child's pid (process group), if any.
    pub pid: Option<i64>,
    /// Its node, if that node is registered.
    pub node: Option<NodeInfo>,
}

/// One job's step in a scheduler pass, applied only if the job is still as
/// the pass read it (`expected_*`): several supervisors may run passes at
/// once, and only one of them advances a job.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct JobAdvance {
    pub name: String,
    /// `next_run_at` as read.
    pub expected_next: Option<Micros>,
    /// `runs` as read.
    pub expected_runs: u64,
    /// The new `next_run_at`.
    pub next: Option<Micros>,
    /// The execution to insert for this step (its occurrence key makes a
    /// second insert of the same occurrence a no-op).
    pub run: Option<crate::model::NewExecution>,
    /// The job's condition, run first: `run` waits on it (inserted only if
    /// `run` is).
    pub condition: Option<crate::model::NewExecution>,
    /// Occurrences passed over in this step.
    pub missed: u64,
    /// The job has no occurrences left.
    pub complete: bool,
    /// New consecutive-short-runs count of a daemon.
    pub daemon_streak: Option<u32>,
}

/// A daemon job with no active execution, and how its last run went.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct IdleDaemon {
    pub job: crate::model::Job,
    /// Start and end of its last execution.
    pub last_run: Option<(Option<Micros>, Option<Micros>)>,
}

/// A queue, its settings and load.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
pub struct QueueInfo {
    pub name: String,
    /// Most executions running at once; `None`: no limit of its own.
    pub max_running: Option<u32>,
    /// Paused queues start nothing new.
    pub paused: bool,
    pub pending: u64,
    pub running: u64,
    /// Most running executions per concurrency key.
    pub key_limit: Option<u32>,
    /// Its rate limit.
    pub rate: Option<crate::model::Rate>,
    /// Starts its rate allows now (`None`: no rate).
    pub tokens: Option<u64>,
}

/// What to change of a queue; `None` leaves a setting as it is, and
/// `Some(None)` removes a limit.
#[derive(Clone, Debug, Default, PartialEq)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
pub struct QueueChange {
    /// Most executions running at once.
    pub limit: Option<Option<u32>>,
    /// Most running executions per concurrency key.
    pub key_limit: Option<Option<u32>>,
    pub rate: Option<Option<crate::model::Rate>>,
    pub paused: Option<bool>,
}

/// Execution statistics of one job.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
pub struct JobStats {
    pub job: String,
    /// Runs: first attempts, each with its retries.
    pub runs: u64,
    /// Attempts in all (every execution row).
    pub attempts: u64,
    /// Runs whose last attempt succeeded.
    pub succeeded: u64,
    /// Runs that failed for good (their last attempt failed).
    pub failed: u64,
    /// Runs whose last attempt was cancelled.
    pub cancelled: u64,
    /// Of the runs that ended, the share that succeeded, 0..=1.
    pub success_rate: Option<f64>,
    /// Duration of finished attempts, ms.
    pub min_ms: Option<f64>,
    /// Mean duration, ms.
    pub avg_ms: Option<f64>,
    /// 95th percentile duration, ms.
    pub p95_ms: Option<f64>,
    /// Longest duration, ms.
    pub max_ms: Option<f64>,
    /// When the last success ended.
    pub last_success: Option<crate::model::Timestamp>,
    /// When the last failure ended.
    pub last_failure: Option<crate::model::Timestamp>,
    pub last_error: Option<String>,
}

/// Executions that ended in one minute, of one handler, with one status.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TimelineRow {
    /// The minute's start.
    pub minute: crate::model::Timestamp,
    /// Their handler.
    pub handler: String,
    /// Their status.
    pub status: Status,
    /// How many.
    pub count: u64,
    /// Mean duration, ms (of those that started).
    pub avg_ms: Option<f64>,
    /// Longest duration, ms.
    pub max_ms: Option<f64>,
}

/// Which of an execution's log lines to read: those between the bounds, at
/// `min_level` or above, holding `contains`; the first `limit` of them, or
/// with `from_end` the last (still returned in order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogPage {
    /// Only lines after this one.
    pub after_seq: i64,
    /// Only lines before this one.
    pub before_seq: Option<i64>,
    /// Only lines at this level or above.
    pub min_level: Option<crate::model::Level>,
    /// Only lines whose message holds this text (case matters).
    pub contains: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// The last `limit` lines rather than the first.
    pub from_end: bool,
    /// At most this many bytes of text and fields (but at least one line,
    /// however long): what one answer or stream event carries at once.
    pub max_bytes: Option<usize>,
}

/// A change of an execution the outbox recorded (the store records one
/// where a webhook may hear it), with the execution as it stands when the
/// change is read.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct Change {
    /// The status it reached.
    pub status: Status,
    /// The execution, as it stands now; `None` once it was pruned.
    pub execution: Option<crate::model::Execution>,
    /// Its id (kept when the row is gone).
    pub execution_id: Uuid,
}

/// A delivery to insert: the run of handler `webhook`, and the chain it
/// keeps its order in (a webhook's deliveries about one subject run one
/// after the other).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct Delivery {
    /// The run (its meta names the webhook and the subject).
    pub run: crate::model::NewExecution,
    /// The webhook's name.
    pub webhook: String,
    /// What the event is about: an execution's id, or a job's name.
    pub subject: String,
}

/// Turns recorded changes into deliveries (given every webhook): called
/// by [`super::Engine::deliver_changes`] within its transaction.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) type Deliver =
    dyn Fn(&[Change], &[crate::model::WebhookSpec]) -> Vec<Delivery> + Send + Sync;

/// What the store did with a webhook put (added, replaced, or refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookPut {
    /// A new webhook.
    Added,
    /// One of that name was replaced.
    Replaced,
    /// Refused: there are [`crate::model::MAX_WEBHOOKS`] already.
    Full,
}

/// An alert's incident, open now: it fired, and has yet to recover.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Incident {
    /// `job.failing`, `job.late`, `job.silent` or `execution.stuck`.
    pub kind: String,
    /// What it is about: a job's name, or an execution's id.
    pub subject: String,
    /// When it opened.
    pub opened_at: crate::model::Timestamp,
    /// What is wrong, in a sentence.
    pub message: String,
    /// The job it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The queue of the runs it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// What an alert pass reads: the jobs that set alerts, with what their
/// alerts look at; the runs that look stuck; the incidents open now.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct AlertFacts {
    /// The jobs that set alerts.
    pub jobs: Vec<JobFacts>,
    /// Running executions past their timeout, or whose node has stopped
    /// heartbeating.
    pub stuck: Vec<crate::model::Execution>,
    /// Incidents open now.
    pub open: Vec<Incident>,
}

/// A job that sets alerts, and what they look at.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct JobFacts {
    /// The job.
    pub job: crate::model::Job,
    /// When it was added.
    pub created_at: Micros,
    /// Its last runs' ends (each run's last attempt), newest first, as
    /// many as `after_failures` asks for.
    pub last_ends: Vec<Status>,
    /// When its oldest scheduled occurrence that has yet to start was due.
    pub oldest_unstarted: Option<Micros>,
    /// When it last succeeded.
    pub last_success: Option<Micros>,
}

/// What an alert pass decided: incidents to open and close, and their
/// deliveries.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) struct AlertChanges {
    /// Incidents that open.
    pub open: Vec<Incident>,
    /// Incidents that close: (kind, subject).
    pub close: Vec<(String, String)>,
    /// The deliveries of both.
    pub deliveries: Vec<Delivery>,
}

/// Decides an alert pass from its facts (given every webhook).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) type DecideAlerts =
    dyn Fn(&AlertFacts, &[crate::model::WebhookSpec]) -> AlertChanges + Send + Sync;
