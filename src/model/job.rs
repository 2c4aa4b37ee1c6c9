//! Jobs: their schedule, chains, overlap and misfire policies, as given and as stored.

use super::execution::{NewExecution, DEFAULT_QUEUE};
use super::labels::{Meta, Origin};
use super::outcome::RetryPolicy;
use super::status::{Mode, Status};
use super::time::Micros;
use super::value::{parse_name, ValueError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr;

/// A job chained to another: when an execution of the other ends as `on`
/// says, one execution of `job` is enqueued with it as its parent.
///
/// ```
/// use jobvisor::model::*;
/// let mut nightly = JobSpec::new("extract", "echo", jobvisor::schedule::ScheduleSpec::Daemon);
/// nightly.then.push(Chain { job: "load".into(), on: ChainOn::Success });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chain {
    /// The job to enqueue.
    pub job: String,
    /// Which ends trigger it.
    pub on: ChainOn,
}

/// Which ends of an execution trigger a chained job.
///
/// ```
/// use jobvisor::model::*;
/// assert!(ChainOn::Failure.matches(Status::Failed));
/// assert!(!ChainOn::Success.matches(Status::Cancelled));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChainOn {
    /// It succeeded.
    #[default]
    Success,
    /// It failed for good (its last attempt failed or timed out).
    Failure,
    /// Any end: succeeded, failed, or cancelled.
    Always,
}

impl ChainOn {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(ChainOn::Always.as_str(), "always");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ChainOn::Success => "success",
            ChainOn::Failure => "failure",
            ChainOn::Always => "always",
        }
    }

    /// Whether an execution that ended with `status` triggers it.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(ChainOn::Always.matches(Status::Cancelled));
    /// ```
    pub fn matches(self, status: Status) -> bool {
        match self {
            ChainOn::Success => status == Status::Succeeded,
            ChainOn::Failure => status == Status::Failed,
            ChainOn::Always => status.is_terminal(),
        }
    }
}

impl FromStr for ChainOn {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [ChainOn::Success, ChainOn::Failure, ChainOn::Always].map(|o| (o.as_str(), o));
        parse_name("chain condition", "success, failure or always", &names, s)
    }
}

/// What a job does when an occurrence falls due while a run is active.
///
/// ```
/// use jobvisor::model::*;
/// let mut sync = JobSpec::new("sync", "noop", jobvisor::schedule::ScheduleSpec::Daemon);
/// sync.overlap = "queue".parse().unwrap();
/// assert_eq!(sync.overlap, Overlap::Queue);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the new occurrence.
    #[default]
    Skip,
    /// Queue it: it runs after the active one (one at a time).
    Queue,
    /// Run it in parallel.
    Allow,
}

impl Overlap {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Overlap::Queue.as_str(), "queue");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

impl FromStr for Overlap {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [Overlap::Skip, Overlap::Queue, Overlap::Allow].map(|o| (o.as_str(), o));
        parse_name("overlap policy", "skip, queue or allow", &names, s)
    }
}

/// How a job recurs.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let spec: ScheduleSpec = serde_json::from_str(r#"{"kind": "cron", "expr": "*/15 * * * *", "tz": "UTC"}"#).unwrap();
/// assert_eq!(spec.kind(), "cron");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScheduleSpec {
    /// One occurrence at `at`.
    Once {
        /// Due time.
        at: Micros,
    },
    /// A cron expression in a time zone.
    Cron {
        /// 5 fields (minute first), 6 (seconds first), or `@hourly` ...
        expr: String,
        /// IANA zone (default UTC).
        tz: String,
    },
    /// Every `every_ms`, anchored at `anchor`: occurrences are
    /// `anchor + k * every`, so lateness never accumulates.
    Interval {
        /// Period.
        every_ms: u64,
        /// First occurrence.
        anchor: Micros,
    },
    /// One execution kept running.
    Daemon,
}

impl ScheduleSpec {
    /// The name stored in `jobs.kind`.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// assert_eq!(ScheduleSpec::Daemon.kind(), "daemon");
    /// assert_eq!(ScheduleSpec::Interval { every_ms: 1000, anchor: 0 }.kind(), "interval");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            ScheduleSpec::Once { .. } => "once",
            ScheduleSpec::Cron { .. } => "cron",
            ScheduleSpec::Interval { .. } => "interval",
            ScheduleSpec::Daemon => "daemon",
        }
    }
}

/// What to do with occurrences missed while no supervisor ran.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// assert_eq!("skip".parse::<Misfire>().unwrap(), Misfire::Skip);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Misfire {
    /// Run one execution for the latest missed occurrence, then go on.
    #[default]
    RunOnce,
    /// Run none of them.
    Skip,
}

impl Misfire {
    /// The name stored and accepted on the command line.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// assert_eq!(Misfire::RunOnce.as_str(), "run-once");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::RunOnce => "run-once",
            Misfire::Skip => "skip",
        }
    }
}

impl FromStr for Misfire {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names = [Misfire::RunOnce, Misfire::Skip].map(|m| (m.as_str(), m));
        parse_name("misfire policy", "run-once or skip", &names, s)
    }
}

/// A job's definition: what runs, when, and under which policy.
///
/// ```
/// let spec: jobvisor::model::JobSpec = serde_json::from_value(serde_json::json!({
///     "name": "nightly", "handler": "backup", "mode": null, "payload": {"full": true},
///     "schedule": {"kind": "cron", "expr": "0 3 * * *", "tz": "UTC"},
///     "priority": 0, "queue": "default", "retries": 2, "backoff_ms": 1000, "timeout_ms": null,
///     "overlap": "skip", "misfire": "run-once", "max_parallel": null, "max_runs": null,
///     "start_at": null, "end_at": null, "paused": false
/// })).unwrap();
/// assert_eq!(spec.retries, 2);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSpec {
    /// Unique name.
    pub name: String,
    /// Handler to run.
    pub handler: String,
    /// Mode; the handler's default when `None`.
    pub mode: Option<Mode>,
    /// Input of every execution.
    pub payload: Value,
    /// When it runs.
    pub schedule: ScheduleSpec,
    /// Higher runs first.
    pub priority: i32,
    /// Queue its executions wait in.
    pub queue: String,
    /// Retries of each failed execution.
    pub retries: u32,
    /// First retry delay (doubles, with jitter).
    pub backoff_ms: u64,
    /// Wall-clock budget of each execution.
    pub timeout_ms: Option<u64>,
    /// When an occurrence meets an active run.
    pub overlap: Overlap,
    /// What happens to occurrences missed while no supervisor ran.
    pub misfire: Misfire,
    /// Most executions of this job running at once.
    pub max_parallel: Option<u32>,
    /// After this many runs the job is complete.
    pub max_runs: Option<u64>,
    /// No occurrence before this time.
    pub start_at: Option<Micros>,
    /// No occurrence after this time.
    pub end_at: Option<Micros>,
    /// Paused jobs start nothing.
    pub paused: bool,
    /// Jobs enqueued when one of its executions ends (`--then`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Chain>,
    /// The concurrency key of its executions (the queue's key limit caps
    /// how many with one key run at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// What it is for, for people (`job show`, the dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Meta given to each of its runs.
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
    /// Tags given to each of its runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The handler that decides, before each occurrence, whether it runs
    /// (`--condition`): it answers `true` to run it, `false` to skip it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The condition's mode (resolved when the job is added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_mode: Option<Mode>,
    /// Retention keeps this many of its newest ended executions, however
    /// old (`--keep-last`), besides those its age rule keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u64>,
    /// When it needs attention (`--alert-after`, `--alert-late`,
    /// `--expect-every`): alerts, which webhooks hear and the dashboard
    /// shows.
    #[serde(default, skip_serializing_if = "JobAlerts::is_empty")]
    pub alerts: JobAlerts,
}

/// When a job needs attention. Each alert fires once when its condition
/// starts to hold, and once more (`….recovered`) when it stops.
///
/// ```
/// use jobvisor::model::JobAlerts;
/// let a = JobAlerts { after_failures: Some(3), ..Default::default() };
/// assert!(!a.is_empty());
/// assert!(JobAlerts::default().is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobAlerts {
    /// `job.failing` once its last this many runs have failed (each run
    /// counted by its last attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_failures: Option<u32>,
    /// `job.late` once a scheduled occurrence has not started this long
    /// (ms) after it was due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_ms: Option<u64>,
    /// `job.silent` once it has not succeeded for this long (ms): a
    /// dead-man switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_every_ms: Option<u64>,
}

/// Most consecutive failures an alert may wait for.
pub const MAX_ALERT_AFTER: u32 = 1000;

impl JobAlerts {
    /// Checks the settings: at least 1 failure (at most
    /// [`MAX_ALERT_AFTER`]), durations of at least a second and at most a
    /// year.
    pub fn check(&self) -> Result<(), String> {
        if let Some(n) = self.after_failures {
            if !(1..=MAX_ALERT_AFTER).contains(&n) {
                return Err(format!(
                    "--alert-after {n}: give 1 to {MAX_ALERT_AFTER} failed runs"
                ));
            }
        }
        for (flag, ms) in [
            ("--alert-late", self.late_ms),
            ("--expect-every", self.expect_every_ms),
        ] {
            if let Some(ms) = ms {
                if !(1_000..=366 * 86_400_000).contains(&ms) {
                    return Err(format!("{flag}: give a duration of 1s to 366d"));
                }
            }
        }
        Ok(())
    }

    /// Whether it sets no alert.
    pub fn is_empty(&self) -> bool {
        self.after_failures.is_none() && self.late_ms.is_none() && self.expect_every_ms.is_none()
    }
}

impl JobSpec {
    /// A job running `handler` on `schedule`, with the defaults of `job
    /// add`: no payload, the handler's mode, the default queue, no retries
    /// (1 s backoff), overlap `skip`, misfire `run-once`, no window or limit.
    ///
    /// ```
    /// use jobvisor::model::JobSpec;
    /// use jobvisor::schedule::ScheduleSpec;
    /// let mut nightly = JobSpec::new("nightly-backup", "backup", ScheduleSpec::Cron {
    ///     expr: "30 2 * * *".into(),
    ///     tz: "Europe/Paris".into(),
    /// });
    /// nightly.retries = 3;
    /// assert_eq!(nightly.queue, "default");
    /// ```
    pub fn new(
        name: impl Into<String>,
        handler: impl Into<String>,
        schedule: ScheduleSpec,
    ) -> Self {
        JobSpec {
            name: name.into(),
            handler: handler.into(),
            mode: None,
            payload: Value::Null,
            schedule,
            priority: 0,
            queue: DEFAULT_QUEUE.into(),
            retries: 0,
            backoff_ms: 1000,
            timeout_ms: None,
            overlap: Overlap::Skip,
            misfire: Misfire::RunOnce,
            max_parallel: None,
            max_runs: None,
            start_at: None,
            end_at: None,
            paused: false,
            then: Vec::new(),
            concurrency_key: None,
            description: None,
            meta: Meta::new(),
            tags: Vec::new(),
            condition: None,
            condition_mode: None,
            keep_last: None,
            alerts: JobAlerts::default(),
        }
    }
}

/// The meta key that names the job whose condition a run is.
pub const CONDITION_FOR: &str = "condition_for";

/// A stored job: its definition and its scheduling state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// use jobvisor::{model::{Job, JobSpec}, schedule::ScheduleSpec};
/// sup.add_job(JobSpec::new("tick", "noop", ScheduleSpec::Interval { every_ms: 60_000, anchor: 0 })).await?;
/// let job: Job = sup.store().job("tick").await?.unwrap();
/// assert!(job.next_run_at.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// The definition.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Occurrences that produced an execution.
    pub runs: u64,
    /// Occurrences passed over (misfire, overlap skip).
    pub missed: u64,
    /// Next due occurrence.
    pub next_run_at: Option<Micros>,
    /// When the job ran out of occurrences (end, max runs, once done).
    pub completed_at: Option<Micros>,
    /// Consecutive short runs of a daemon (drives its restart backoff).
    pub daemon_streak: u32,
}

impl Job {
    /// An occurrence `run` of this job and, if the job has a condition, the
    /// condition's run, which goes first: `run` waits on it, with policy
    /// [`AfterPolicy::Condition`](super::AfterPolicy::Condition). The
    /// condition runs with the occurrence's payload and tags, in the job's
    /// queue, once (no retries). It is no run of the job (the job's counts
    /// and history leave it out): its meta says whose condition it is,
    /// `condition_for=JOB`.
    pub(crate) fn conditioned(
        &self,
        mut run: NewExecution,
    ) -> (NewExecution, Option<NewExecution>) {
        let Some(handler) = &self.spec.condition else {
            return (run, None);
        };
        let mut meta = run.meta.clone();
        meta.insert(CONDITION_FOR.into(), self.spec.name.clone());
        let condition = NewExecution {
            id: uuid::Uuid::now_v7(),
            job: None,
            meta,
            handler: handler.clone(),
            mode: self.spec.condition_mode.unwrap_or(Mode::Inproc),
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            timeout_ms: None,
            occurrence: None,
            concurrency_key: None,
            // A trace of its own (its run's span would be named twice).
            trace: None,
            ..run.clone()
        };
        run.after = vec![condition.id];
        run.after_policy = super::AfterPolicy::Condition;
        (run, Some(condition))
    }

    /// What an occurrence of this job runs as (`None`: a run that is no
    /// scheduled occurrence, chained unless its caller says otherwise).
    pub(crate) fn execution(&self, occurrence: Option<Micros>, run_at: Micros) -> NewExecution {
        let spec = &self.spec;
        let origin = match (&spec.schedule, occurrence) {
            (ScheduleSpec::Daemon, _) => Origin::Daemon,
            (_, Some(_)) => Origin::Scheduled,
            (_, None) => Origin::Chained,
        };
        // Resolved when the job was added.
        let mode = spec.mode.unwrap_or(Mode::Inproc);
        let daemon = matches!(spec.schedule, ScheduleSpec::Daemon);
        NewExecution {
            id: uuid::Uuid::now_v7(),
            job: Some(spec.name.clone()),
            handler: spec.handler.clone(),
            mode,
            payload: spec.payload.clone(),
            retry: RetryPolicy {
                // A daemon's restarts are its retries.
                max_attempts: if daemon {
                    1
                } else {
                    spec.retries.saturating_add(1)
                },
                backoff_base_ms: spec.backoff_ms,
                backoff_cap_ms: RetryPolicy::default().backoff_cap_ms,
            },
            timeout_ms: spec.timeout_ms,
            priority: spec.priority,
            run_at,
            attempt: 1,
            previous_id: None,
            queue: spec.queue.clone(),
            occurrence,
            unique: None,
            concurrency_key: spec.concurrency_key.clone(),
            after: Vec::new(),
            after_policy: Default::default(),
            step: None,
            origin,
            trace: None,
            meta: spec.meta.clone(),
            tags: spec.tags.clone(),
        }
    }
}
