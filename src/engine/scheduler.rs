//! The scheduler: turns due occurrences of jobs into pending executions.
//! The actor (`Scheduler`) runs passes; a [`Planner`] holds what a pass
//! keeps between passes.
//!
//! Each pass reads the due jobs, decides per job (misfire, window, overlap,
//! max runs) and applies all steps in one transaction. A step applies only
//! if the job is still as the pass read it, and an occurrence's execution
//! carries a unique (job, occurrence) key: any number of supervisors can run
//! passes at once and each occurrence still yields at most one execution.

use crate::engine::{tell_or_drop, ToDispatcher, ToScheduler, Vitals};
use crate::model::{now_micros, Job, Micros, NewExecution, Overlap};
use crate::schedule::{fire, Schedule, ScheduleSpec};
use crate::store::{Finished, JobAdvance, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Due jobs handled per pass: small enough that the dispatcher starts the
/// first occurrences while the scheduler writes the next ones.
const PASS_LIMIT: usize = 1000;

/// A daemon run shorter than this counts as a crash for the restart backoff;
/// a longer one resets it.
pub const DAEMON_HEALTHY: Duration = Duration::from_secs(30);

/// Longest delay between daemon restarts.
pub const DAEMON_MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The outcome of one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassOutcome {
    /// Executions inserted.
    pub inserted: usize,
    /// Whether more jobs were due than one pass takes.
    pub more: bool,
}

/// A step for `job` as this pass read it: the job completes when no next
/// occurrence is left.
fn step(job: &Job, next: Option<Micros>, run: Option<NewExecution>, missed: u64) -> JobAdvance {
    let (run, condition) = match run {
        Some(run) => {
            let (run, condition) = job.conditioned(run);
            (Some(run), condition)
        }
        None => (None, None),
    };
    JobAdvance {
        name: job.spec.name.clone(),
        expected_next: job.next_run_at,
        expected_runs: job.runs,
        next,
        run,
        condition,
        missed,
        complete: next.is_none(),
        daemon_streak: None,
    }
}

/// The first due time of a new job at `now`, or `None` if it has none.
pub fn first_due(
    spec: &crate::model::JobSpec,
    now: Micros,
) -> Result<Option<Micros>, crate::schedule::ScheduleError> {
    let schedule = Schedule::from_spec(&spec.schedule)?;
    let from = spec.start_at.map_or(now, |s| s.max(now));
    let first = match &spec.schedule {
        ScheduleSpec::Once { at } => Some(*at),
        ScheduleSpec::Daemon => None,
        // An interval anchored "now" (when the command was parsed, a moment
        // ago) starts with its anchor.
        ScheduleSpec::Interval { anchor, .. } if *anchor >= from - 5_000_000 => Some(*anchor),
        _ => schedule.first_at_or_after(from),
    };
    Ok(first.filter(|t| spec.end_at.is_none_or(|end| *t <= end)))
}

/// The scheduler's memory between passes: parsed schedules, so that a cron
/// expression is parsed once, not at every occurrence.
#[derive(Default)]
pub struct Planner {
    parsed: HashMap<String, (ScheduleSpec, Schedule)>,
    /// Whether a pass keeps what it inserted, for `enqueued` events.
    announce: bool,
    /// What the last pass inserted, when `announce` was set.
    inserted: Vec<crate::engine::events::Enqueued>,
}

impl Planner {
    /// A planner with nothing parsed yet.
    ///
    /// ```
    /// let planner = jobvisor::scheduler::Planner::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn schedule(&mut self, job: &Job) -> Result<&Schedule, crate::schedule::ScheduleError> {
        let fresh = self
            .parsed
            .get(&job.spec.name)
            .is_some_and(|(spec, _)| *spec == job.spec.schedule);
        if !fresh {
            let parsed = Schedule::from_spec(&job.spec.schedule)?;
            self.parsed
                .insert(job.spec.name.clone(), (job.spec.schedule.clone(), parsed));
        }
        Ok(&self.parsed[&job.spec.name].1)
    }

    /// Runs one pass over due scheduled jobs and idle daemons, remembering
    /// the schedules it parsed for the next.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) async fn pass(&mut self, store: &dyn Store) -> Result<PassOutcome, StoreError> {
        pass_with(self, store).await
    }
}

async fn pass_with(sched: &mut Planner, store: &dyn Store) -> Result<PassOutcome, StoreError> {
    let now = now_micros();
    let due = store.due_jobs(now, PASS_LIMIT).await?;
    let more = due.len() == PASS_LIMIT;
    let skippers: Vec<String> = due
        .iter()
        .filter(|j| j.spec.overlap == Overlap::Skip)
        .map(|j| j.spec.name.clone())
        .collect();
    let active = if skippers.is_empty() {
        Default::default()
    } else {
        store.active_jobs(&skippers).await?
    };
    let mut steps = Vec::with_capacity(due.len());
    for job in &due {
        let Some(due_at) = job.next_run_at else {
            continue;
        };
        let spec = &job.spec;
        let schedule = match sched.schedule(job) {
            Ok(s) => s,
            Err(e) => {
                // Validated on insert; a row edited by hand stops here.
                tracing::error!(job = %spec.name, error = %e, "job has an unusable schedule; completing it");
                steps.push(step(job, None, None, 0));
                continue;
            }
        };
        let f = fire(schedule, due_at, now, spec.misfire);
        let mut next = f.next;
        let mut missed = f.missed;
        let mut run = f.run;
        if let Some(end) = spec.end_at {
            next = next.filter(|t| *t <= end);
            run = run.filter(|t| *t <= end);
        }
        if run.is_some() && spec.overlap == Overlap::Skip && active.contains(&spec.name) {
            run = None;
            missed += 1;
        }
        let runs_after = job.runs + u64::from(run.is_some());
        if spec.max_runs.is_some_and(|max| job.runs >= max) {
            run = None;
        }
        let exhausted = spec.max_runs.is_some_and(|max| runs_after >= max);
        if exhausted {
            next = None;
        }
        steps.push(step(
            job,
            next,
            run.map(|occ| job.execution(Some(occ), occ)),
            missed,
        ));
    }

    // Daemons: exactly one execution kept; restarted with a backoff that
    // grows with consecutive short runs and resets after a healthy one.
    for d in store.idle_daemons().await? {
        let job = &d.job;
        if job.spec.max_runs.is_some_and(|max| job.runs >= max) {
            steps.push(step(job, None, None, 0));
            continue;
        }
        let (run_at, streak) = match d.last_run {
            None => (now, 0),
            Some((started, finished)) => {
                let ran = match (started, finished) {
                    (Some(s), Some(f)) => f - s,
                    _ => 0,
                };
                let streak = if ran >= DAEMON_HEALTHY.as_micros() as i64 {
                    0
                } else {
                    job.daemon_streak.saturating_add(1)
                };
                let base = job.spec.backoff_ms.max(1);
                let delay_ms = base
                    .saturating_mul(1u64 << streak.saturating_sub(1).min(30))
                    .min(DAEMON_MAX_BACKOFF.as_millis() as u64);
                let delay_ms = if streak == 0 { 0 } else { delay_ms };
                (finished.unwrap_or(now) + delay_ms as i64 * 1000, streak)
            }
        };
        let generation = job.runs as Micros + 1;
        steps.push(JobAdvance {
            complete: false,
            daemon_streak: Some(streak),
            ..step(job, None, Some(job.execution(Some(generation), run_at)), 0)
        });
    }
    let inserted = store.advance_jobs(&steps, now).await?;
    sched.inserted.clear();
    if sched.announce && inserted > 0 {
        let runs = steps.iter().filter_map(|s| s.run.as_ref());
        if runs.clone().count() == inserted {
            sched.inserted.extend(runs.map(Into::into));
        } else {
            // Another node advanced some of these jobs first. Its runs of
            // the same occurrences have ids of their own (made when planned),
            // so a run found by its id here is one this pass inserted. The
            // pass has committed: a failed look costs an event, not the pass.
            for run in runs {
                if let Ok(Some(_)) = store.execution(run.id).await {
                    sched.inserted.push(run.into());
                }
            }
        }
    }
    Ok(PassOutcome { inserted, more })
}

pub(crate) struct Scheduler {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) inbox: mpsc::Receiver<ToScheduler>,
    pub(crate) finished: broadcast::Receiver<Finished>,
    pub(crate) dispatcher: mpsc::Sender<ToDispatcher>,
    pub(crate) poll_cap: Duration,
    pub(crate) vitals: Arc<Vitals>,
    pub(crate) planner: Planner,
    pub(crate) events: Arc<crate::engine::events::Hub>,
}

/// The scheduler's longest sleep while the database is watched.
const QUIET_CAP: Duration = Duration::from_secs(60);

/// How often a sleeping scheduler shows it is alive (what feeds a watchdog
/// allows a loop 30 s of silence).
const BEAT: Duration = Duration::from_secs(5);

/// Sleeps until `due`, beating every [`BEAT`].
async fn beat_until(vitals: &Vitals, due: tokio::time::Instant) {
    loop {
        let now = tokio::time::Instant::now();
        if now >= due {
            return;
        }
        tokio::time::sleep_until(due.min(now + BEAT)).await;
        vitals
            .scheduler
            .store(now_micros(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Scheduler {
    pub(crate) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut cap = self.poll_cap;
        loop {
            self.vitals
                .scheduler
                .store(now_micros(), std::sync::atomic::Ordering::Relaxed);
            self.planner.announce = self.events.heard();
            let wait = match self.planner.pass(self.store.as_ref()).await {
                Ok(outcome) => {
                    backoff = Duration::from_millis(100);
                    self.events
                        .enqueued(std::mem::take(&mut self.planner.inserted));
                    if outcome.inserted > 0 {
                        tell_or_drop(&self.dispatcher, ToDispatcher::Wake);
                    }
                    if outcome.more {
                        continue;
                    }
                    self.until_next_due(cap).await
                }
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "scheduler pass failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            // A finished execution may be a daemon's: look again soon (at
            // most every 50 ms, however many executions finish). A long
            // sleep is cut into vitals, so that a watchdog sees the loop
            // alive.
            let due = tokio::time::Instant::now() + wait;
            let woke_by_finish = tokio::select! {
                _ = beat_until(&self.vitals, due) => false,
                msg = self.inbox.recv() => {
                    // Any number of changes queued at once are one pass.
                    let mut next = Some(msg);
                    while let Some(msg) = next {
                        match msg {
                            Some(ToScheduler::JobsChanged) => {}
                            Some(ToScheduler::Watched(w)) => {
                                cap = if w { self.poll_cap.max(crate::idle::idle(QUIET_CAP)) } else { self.poll_cap };
                            }
                            Some(ToScheduler::Panic) => panic!("fault injected into the scheduler"),
                            Some(ToScheduler::Stop) | None => return,
                        }
                        next = self.inbox.try_recv().ok().map(Some);
                    }
                    false
                }
                r = self.finished.recv() => !matches!(r, Err(broadcast::error::RecvError::Closed)),
            };
            if woke_by_finish {
                tokio::time::sleep(Duration::from_millis(50)).await;
                while self.finished.try_recv().is_ok() {}
            }
        }
    }

    /// How long until the earliest due job, at most `cap`.
    async fn until_next_due(&self, cap: Duration) -> Duration {
        match self.store.next_due().await {
            Ok(Some(t)) => Duration::from_micros((t - now_micros()).max(0) as u64).min(cap),
            Ok(None) => cap,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "reading the next due time failed");
                self.poll_cap
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobSpec;

    fn spec(schedule: ScheduleSpec) -> JobSpec {
        JobSpec::new("j", "noop", schedule)
    }

    #[test]
    fn an_interval_added_now_first_runs_now_and_a_window_bounds_the_first_run() {
        let now = 1_800_000_000_000_000;
        let every = spec(ScheduleSpec::Interval {
            every_ms: 30_000,
            anchor: now - 3_000,
        });
        assert_eq!(first_due(&every, now).unwrap(), Some(now - 3_000));
        let mut cron = spec(ScheduleSpec::Cron {
            expr: "0 * * * *".into(),
            tz: "UTC".into(),
        });
        let hour = 3_600_000_000;
        cron.start_at = Some(now + 2 * hour);
        assert_eq!(
            first_due(&cron, now).unwrap(),
            Some((now / hour + 2) * hour)
        );
        cron.end_at = Some(now + hour);
        assert_eq!(first_due(&cron, now).unwrap(), None);
    }
}
