//! Job management: adding (validated, with its first due time), pausing,
//! resuming, removing and triggering jobs.

use crate::model::{now_micros, HandlerKind, JobSpec, Micros, Mode};
use crate::schedule::{Schedule, ScheduleSpec};
use crate::store::{CancelRequest, Store};
use crate::Error;

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
        return Err(Error::Invalid(format!(
            "a job named {:?} already exists (--replace changes it in place)",
            spec.name
        )));
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
    let exec = job.execution(None, now_micros());
    store
        .enqueue(std::slice::from_ref(&exec), now_micros())
        .await?;
    Ok(exec)
}
