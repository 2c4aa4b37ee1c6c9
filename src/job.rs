//! Job management: adding (validated, with its first due time), pausing,
//! resuming, removing and triggering jobs.

use crate::model::{now_micros, Chain, ChainOn, HandlerKind, JobSpec, Micros, Mode, Overlap};
use crate::schedule::{Misfire, Schedule, ScheduleSpec};
use crate::store::{CancelRequest, Store};
use crate::Error;
use std::time::Duration;

/// When a job runs, as `job add`, `job preview` and the HTTP API say it:
/// at most one of a cron expression, an interval, a time and a daemon
/// (none: once, now).
///
/// ```
/// use jobvisor::job::When;
/// use jobvisor::schedule::ScheduleSpec;
/// let w = When { cron: Some("0 7 * * *".into()), tz: Some("Europe/Paris".into()), ..Default::default() };
/// assert!(matches!(w.schedule(0).unwrap(), ScheduleSpec::Cron { .. }));
/// let both = When { cron: Some("0 7 * * *".into()), daemon: true, ..Default::default() };
/// assert!(both.schedule(0).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct When {
    /// A cron expression (crontab(5), or 6 fields with seconds first).
    pub cron: Option<String>,
    /// The cron expression's IANA time zone (UTC if none).
    pub tz: Option<String>,
    /// An interval.
    pub every: Option<Duration>,
    /// The interval's first occurrence; for every schedule, no occurrence
    /// before it.
    pub start: Option<Micros>,
    /// The one time it runs.
    pub at: Option<Micros>,
    /// Keep one execution running, restarted when it ends.
    pub daemon: bool,
}

impl When {
    /// The schedule; `now` anchors what has no time of its own.
    pub fn schedule(&self, now: Micros) -> Result<ScheduleSpec, Error> {
        let given = [
            self.cron.is_some(),
            self.every.is_some(),
            self.at.is_some(),
            self.daemon,
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::Invalid(
                "give one of cron, every, at and daemon".into(),
            ));
        }
        if self.tz.is_some() && self.cron.is_none() {
            return Err(Error::Invalid("tz goes with cron only".into()));
        }
        Ok(if let Some(expr) = &self.cron {
            let tz = self.tz.clone().unwrap_or_else(|| "UTC".into());
            // Parsed now, so that the error names what is wrong.
            crate::schedule::CronSchedule::parse(expr, &tz)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            ScheduleSpec::Cron {
                expr: expr.clone(),
                tz,
            }
        } else if let Some(every) = self.every {
            if every.is_zero() {
                return Err(Error::Invalid("--every must be longer than 0".into()));
            }
            ScheduleSpec::Interval {
                every_ms: every.as_millis().clamp(1, u64::MAX as u128) as u64,
                anchor: self.start.unwrap_or(now),
            }
        } else if self.daemon {
            ScheduleSpec::Daemon
        } else {
            ScheduleSpec::Once {
                at: self.at.or(self.start).unwrap_or(now),
            }
        })
    }

    /// Its first `count` occurrences after `from`, which also anchors a
    /// schedule that has no time of its own (what `job preview` shows).
    pub fn occurrences(&self, from: Micros, count: usize) -> Result<Vec<Micros>, Error> {
        let spec = self.schedule(from)?;
        let schedule = Schedule::from_spec(&spec).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(schedule.occurrences(from, count))
    }

    /// Whether it fixes its schedule's start (a start or a time): if not, a
    /// job replaced keeps the anchor it has ([`keep_anchor`]).
    pub fn fixes_start(&self) -> bool {
        self.start.is_some() || self.at.is_some()
    }
}

/// A job as `job add` and `POST /v1/jobs` describe it, before it is
/// checked: [`Definition::spec`] makes the [`JobSpec`] that
/// [`crate::Client::add_job`] checks against the handlers and stores.
///
/// ```
/// use jobvisor::job::{Definition, When};
/// let mut d = Definition::new("nightly", "backup");
/// d.when = When { cron: Some("30 2 * * *".into()), ..Default::default() };
/// d.retries = 3;
/// let spec = d.spec(0).unwrap();
/// assert_eq!((spec.retries, spec.backoff_ms, spec.queue.as_str()), (3, 1000, "default"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// Unique name.
    pub name: String,
    /// The handler it runs.
    pub handler: String,
    /// When it runs.
    pub when: When,
    /// Input of every execution.
    pub payload: serde_json::Value,
    /// Mode; the handler's when `None`.
    pub mode: Option<Mode>,
    /// Higher runs first.
    pub priority: i32,
    /// The queue its executions wait in.
    pub queue: String,
    /// Retries of a failed execution.
    pub retries: u32,
    /// The first retry's delay (doubling, with jitter); a daemon's restart
    /// delay.
    pub backoff: Duration,
    /// Wall-clock limit of each execution.
    pub timeout: Option<Duration>,
    /// When an occurrence meets an active run.
    pub overlap: Overlap,
    /// Occurrences missed while no supervisor ran.
    pub misfire: Misfire,
    /// Most of its executions running at once.
    pub max_parallel: Option<u32>,
    /// Its executions' concurrency key.
    pub concurrency_key: Option<String>,
    /// Complete after this many runs.
    pub max_runs: Option<u64>,
    /// No occurrence after this time.
    pub end: Option<Micros>,
    /// Added paused.
    pub paused: bool,
    /// Jobs enqueued when one of its executions ends.
    pub then: Vec<String>,
    /// Which ends enqueue them: one for all, or one per job of `then`.
    pub then_on: Vec<ChainOn>,
    /// What it is for, for people: at most [`MAX_DESCRIPTION`] characters.
    pub description: Option<String>,
    /// Meta given to each of its runs.
    pub meta: crate::model::Meta,
    /// Tags given to each of its runs.
    pub tags: Vec<String>,
    /// The handler that decides, before each occurrence, whether it runs.
    pub condition: Option<String>,
    /// Retention keeps this many of its newest ended executions, however
    /// old.
    pub keep_last: Option<u64>,
    /// When it needs attention.
    pub alerts: crate::model::JobAlerts,
}

/// At most this many characters of a job's description.
pub const MAX_DESCRIPTION: usize = 1024;

impl Definition {
    /// A job running `handler` once, now, with `job add`'s defaults.
    pub fn new(name: impl Into<String>, handler: impl Into<String>) -> Definition {
        Definition {
            name: name.into(),
            handler: handler.into(),
            when: When::default(),
            payload: serde_json::Value::Null,
            mode: None,
            priority: 0,
            queue: crate::model::DEFAULT_QUEUE.into(),
            retries: 0,
            backoff: Duration::from_secs(1),
            timeout: None,
            overlap: Overlap::default(),
            misfire: Misfire::default(),
            max_parallel: None,
            concurrency_key: None,
            max_runs: None,
            end: None,
            paused: false,
            then: Vec::new(),
            then_on: Vec::new(),
            description: None,
            meta: Default::default(),
            tags: Vec::new(),
            condition: None,
            keep_last: None,
            alerts: Default::default(),
        }
    }

    /// The job's spec; `now` anchors a schedule that has no time of its
    /// own. What needs the database (the handler, the chained jobs) is
    /// checked when it is added.
    pub fn spec(self, now: Micros) -> Result<JobSpec, Error> {
        let schedule = self.when.schedule(now)?;
        crate::model::check_tags(&self.tags).map_err(Error::Invalid)?;
        crate::model::check_meta(&self.meta).map_err(Error::Invalid)?;
        if let Some(d) = &self.description {
            if d.contains('\0') {
                return Err(Error::Invalid("a description cannot hold NUL".into()));
            }
            let chars = d.chars().count();
            if chars > MAX_DESCRIPTION {
                return Err(Error::Invalid(format!(
                    "a description of {chars} characters: at most {MAX_DESCRIPTION} are allowed"
                )));
            }
        }
        self.alerts.check().map_err(Error::Invalid)?;
        let then = chains(&self.name, self.then, &self.then_on)?;
        let millis = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        Ok(JobSpec {
            name: self.name,
            handler: self.handler,
            mode: self.mode,
            payload: self.payload,
            schedule,
            priority: self.priority,
            queue: self.queue,
            retries: self.retries,
            backoff_ms: millis(self.backoff),
            timeout_ms: self.timeout.map(millis),
            overlap: self.overlap,
            misfire: self.misfire,
            max_parallel: self.max_parallel,
            max_runs: self.max_runs,
            start_at: self.when.start,
            end_at: self.end,
            paused: self.paused,
            then,
            concurrency_key: self.concurrency_key,
            description: self.description,
            meta: self.meta,
            tags: self.tags,
            condition: self.condition,
            condition_mode: None,
            keep_last: self.keep_last,
            alerts: self.alerts,
        })
    }
}

/// `then` and `then_on` as chains: one `then_on` for all, or one per job.
fn chains(name: &str, then: Vec<String>, on: &[ChainOn]) -> Result<Vec<Chain>, Error> {
    if on.len() > 1 && on.len() != then.len() {
        return Err(Error::Invalid(format!(
            "--then-on is given {} times for {} --then jobs (give it once for all, or once per --then)",
            on.len(),
            then.len()
        )));
    }
    let mut out: Vec<Chain> = Vec::with_capacity(then.len());
    for (i, job) in then.into_iter().enumerate() {
        if job == name {
            return Err(Error::Invalid(format!(
                "job {name:?} cannot chain to itself"
            )));
        }
        let on = on.get(i).or(on.first()).copied().unwrap_or_default();
        if !out.iter().any(|c| c.job == job && c.on == on) {
            out.push(Chain { job, on });
        }
    }
    Ok(out)
}

/// Checks a job definition and resolves its mode against the handler.
/// Nothing is written.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn validate(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    spec: &mut JobSpec,
) -> Result<(), Error> {
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(Error::Invalid(format!(
            "invalid job name {:?}: use letters, digits, '-', '_', '.' and ':'",
            spec.name
        )));
    }
    Schedule::from_spec(&spec.schedule).map_err(|e| Error::Invalid(e.to_string()))?;
    if let (Some(s), Some(e)) = (spec.start_at, spec.end_at) {
        if e < s {
            return Err(Error::Invalid(format!(
                "the window ends ({}) before it starts ({})",
                crate::model::format_micros(e),
                crate::model::format_micros(s)
            )));
        }
    }
    if spec.keep_last == Some(0) || spec.keep_last.is_some_and(|n| n > i64::MAX as u64) {
        return Err(Error::Invalid(
            "--keep-last must be at least 1 (leave it out to keep by age only)".into(),
        ));
    }
    if spec.max_runs == Some(0) {
        return Err(Error::Invalid("--max-runs must be at least 1".into()));
    }
    if spec.max_parallel == Some(0) {
        return Err(Error::Invalid("--max-parallel must be at least 1".into()));
    }
    if spec.timeout_ms == Some(0) {
        return Err(Error::Invalid("a timeout must be longer than 0".into()));
    }
    if spec.queue.is_empty() {
        return Err(Error::Invalid("a queue name cannot be empty".into()));
    }
    crate::model::refuse_webhook_handler(&spec.handler).map_err(Error::Invalid)?;
    if let Some(c) = &spec.condition {
        crate::model::refuse_webhook_handler(c).map_err(Error::Invalid)?;
    }
    {
        use crate::model::check_name;
        check_name("job name", &spec.name).map_err(Error::Invalid)?;
        check_name("handler name", &spec.handler).map_err(Error::Invalid)?;
        check_name("queue name", &spec.queue).map_err(Error::Invalid)?;
        for (what, name) in [
            ("condition handler name", &spec.condition),
            ("concurrency key", &spec.concurrency_key),
        ] {
            if let Some(name) = name {
                check_name(what, name).map_err(Error::Invalid)?;
            }
        }
    }
    let mode = match store.handler(&spec.handler).await? {
        Some(h) => match (&h.kind, spec.mode) {
            (HandlerKind::Exec { .. }, Some(Mode::Inproc)) => {
                return Err(Error::ExecNotInproc(spec.handler.clone()))
            }
            (HandlerKind::Exec { .. }, _) => Mode::Process,
            (HandlerKind::Rust, m) => m.unwrap_or(h.mode),
        },
        None if local(&spec.handler) => spec.mode.unwrap_or(Mode::Inproc),
        None => return Err(Error::UnknownHandler(spec.handler.clone())),
    };
    spec.mode = Some(mode);
    spec.condition_mode = match &spec.condition {
        None => None,
        Some(_) if matches!(spec.schedule, ScheduleSpec::Daemon) => {
            return Err(Error::Invalid(
                "a daemon has no occurrences for a condition to decide (--condition)".into(),
            ))
        }
        Some(c) => Some(match store.handler(c).await? {
            Some(h) => match h.kind {
                HandlerKind::Exec { .. } => Mode::Process,
                HandlerKind::Rust => h.mode,
            },
            None if local(c) => Mode::Inproc,
            None => {
                return Err(Error::Invalid(format!(
                    "unknown condition handler {c:?} (`jobvisor handler list` shows the registered ones)"
                )))
            }
        }),
    };
    Ok(())
}

/// Adds a job after validating it; returns its first due time.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn add(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    mut spec: JobSpec,
) -> Result<Option<Micros>, Error> {
    validate(store, local, &mut spec).await?;
    let now = now_micros();
    let first = first_due(&spec, now)?;
    if !store.insert_job(&spec, first, now).await? {
        return Err(Error::JobExists(spec.name));
    }
    Ok(first)
}

/// The first occurrence of `spec` from `now` (`None` for a daemon); a
/// schedule with none in the job's window is refused.
fn first_due(spec: &JobSpec, now: Micros) -> Result<Option<Micros>, Error> {
    let first = crate::engine::scheduler::first_due(spec, now)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    if first.is_none() && !matches!(spec.schedule, ScheduleSpec::Daemon) {
        return Err(Error::Invalid(
            "the schedule has no occurrence inside the job's window".into(),
        ));
    }
    Ok(first)
}

/// Changes job `spec.name` in place to `spec` (validated): its history
/// (executions, run and miss counts) stays with it; its next due time is
/// computed anew, from `spec`'s anchor (see [`keep_anchor`]). Running and
/// pending executions keep the definition they were made with. Returns the
/// next due time.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn replace(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    mut spec: JobSpec,
) -> Result<Option<Micros>, Error> {
    validate(store, local, &mut spec).await?;
    let now = now_micros();
    let next = first_due(&spec, now)?;
    if !store.replace_job(&spec, next, now).await? {
        return Err(Error::UnknownJob(spec.name));
    }
    Ok(next)
}

/// A job changed without an explicit start keeps the anchor of its
/// interval (when the period stays) or the time it runs once, so that its
/// grid does not move.
///
/// ```
/// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
/// let hourly = || JobSpec::new("sync", "noop", ScheduleSpec::Interval { every_ms: 3_600_000, anchor: 0 });
/// let old = JobSpec::new("sync", "noop", ScheduleSpec::Interval { every_ms: 3_600_000, anchor: 42 });
/// let mut new = JobSpec::new("sync", "noop", ScheduleSpec::Interval { every_ms: 3_600_000, anchor: 99 });
/// jobvisor::job::keep_anchor(&mut new, &old);
/// assert_eq!(new.schedule, ScheduleSpec::Interval { every_ms: 3_600_000, anchor: 42 });
/// ```
pub fn keep_anchor(new: &mut JobSpec, old: &JobSpec) {
    match (&mut new.schedule, &old.schedule) {
        (
            ScheduleSpec::Interval { every_ms, anchor },
            ScheduleSpec::Interval {
                every_ms: e,
                anchor: a,
            },
        ) if every_ms == e => *anchor = *a,
        (ScheduleSpec::Once { at }, ScheduleSpec::Once { at: a }) => *at = *a,
        _ => {}
    }
}

/// Checks that every job `spec` chains to exists (a configuration file's
/// jobs are checked as a whole instead, since one may chain to the next).
pub(crate) async fn check_chains(store: &dyn Store, spec: &JobSpec) -> Result<(), Error> {
    for c in &spec.then {
        if store.job(&c.job).await?.is_none() {
            return Err(Error::Invalid(format!(
                "--then {:?}: no job of that name (add it first)",
                c.job
            )));
        }
    }
    Ok(())
}

/// The kind of `declared` row that names the configuration file that
/// declared the others.
pub(crate) const DECLARING_FILE: &str = "file";

/// Refuses to change or remove job `name` when the configuration file
/// declared it: the file owns it.
pub(crate) async fn refuse_declared(store: &dyn Store, name: &str) -> Result<(), Error> {
    if !store.declared("job").await?.iter().any(|n| n == name) {
        return Ok(());
    }
    Err(Error::Declared {
        name: name.to_string(),
        file: store.declared(DECLARING_FILE).await?.pop(),
    })
}

/// Pauses a job; a daemon's running execution is cancelled (it is not
/// restarted while paused).
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn pause(store: &dyn Store, name: &str) -> Result<(), Error> {
    let job = store
        .job(name)
        .await?
        .ok_or_else(|| Error::UnknownJob(name.to_string()))?;
    store.set_job_paused(name, true, now_micros()).await?;
    if matches!(job.spec.schedule, ScheduleSpec::Daemon) {
        cancel_active(store, name, "daemon job paused").await?;
    }
    Ok(())
}

/// Resumes a paused job. A scheduled job whose occurrences passed while it
/// was paused follows its misfire policy.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn resume(store: &dyn Store, name: &str) -> Result<(), Error> {
    if !store.set_job_paused(name, false, now_micros()).await? {
        return Err(Error::UnknownJob(name.to_string()));
    }
    Ok(())
}

/// Removes a job; a daemon's execution is cancelled. Executions stay as
/// history.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn remove(store: &dyn Store, name: &str) -> Result<(), Error> {
    let job = store
        .job(name)
        .await?
        .ok_or_else(|| Error::UnknownJob(name.to_string()))?;
    store.remove_job(name).await?;
    if matches!(job.spec.schedule, ScheduleSpec::Daemon) {
        cancel_active(store, name, "daemon job removed").await?;
    }
    Ok(())
}

async fn cancel_active(store: &dyn Store, name: &str, reason: &str) -> Result<(), Error> {
    for id in store.active_executions(name).await? {
        let r = store.request_cancel(id, reason, now_micros()).await?;
        debug_assert!(r != CancelRequest::NotFound);
    }
    Ok(())
}

/// Runs job `name` now, outside its schedule; gives back the execution as
/// inserted.
pub(crate) async fn trigger_inserting(
    store: &dyn Store,
    name: &str,
) -> Result<crate::model::NewExecution, Error> {
    let job = store
        .job(name)
        .await?
        .ok_or_else(|| Error::UnknownJob(name.to_string()))?;
    let mut exec = job.execution(None, now_micros());
    exec.origin = crate::model::Origin::Triggered;
    store
        .enqueue(std::slice::from_ref(&exec), now_micros())
        .await?;
    Ok(exec)
}
