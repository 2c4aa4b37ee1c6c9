//! Jobs: list, show, create, replace, remove, trigger, pause, resume, and
//! schedule previews.

use super::error::{body, ok, with_status, ApiError, ApiResult};
use super::{ApiState, ErrorBody};
use crate::contract::{self, Name};
use crate::job::{Definition, When};
use crate::model::{ChainOn, Job, Mode, Overlap};
use crate::schedule::Misfire;
use crate::Error;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration as StdDuration;
use utoipa::ToSchema;
use uuid::Uuid;

/// A page of jobs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct JobsQuery {
    /// Only jobs named after this one (the last of the previous page).
    #[param(value_type = Option<Name>)]
    after: Option<String>,
    /// At most this many.
    #[param(minimum = 1, maximum = 1000, default = 1000)]
    limit: Option<usize>,
}

/// List jobs, by name, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "listJobs", tag = "jobs", params(JobsQuery),
    responses((status = 200, description = "The jobs, by name", body = Vec<JobView>)))]
pub(super) async fn list(
    State(api): ApiState,
    axum::extract::Query(q): axum::extract::Query<JobsQuery>,
) -> ApiResult {
    let limit = super::error::bounded("limit", q.limit, 1000, 1000)?;
    let declared = api.sup.store().store().declared("job").await?;
    let views = api
        .sup
        .store()
        .jobs_page(q.after.as_deref(), limit)
        .await?
        .into_iter()
        .map(|job| {
            Ok(JobView {
                declared: declared.contains(&job.spec.name),
                next_runs: next_runs(&job, 5)?,
                job,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    ok(views)
}

/// Show a job: its definition and scheduling state.
#[utoipa::path(get, path = "/v1/jobs/{name}", operation_id = "showJob", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No job of that name", body = ErrorBody),
    ))]
pub(super) async fn show(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    view(&api, &name).await
}

/// How many.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NextQuery {
    /// At most this many occurrences.
    #[param(minimum = 1, maximum = 100, default = 5)]
    count: Option<usize>,
}

/// A job's next occurrences from now, as `job preview` computes them
/// (none for a daemon, or once the job is complete; none after its end).
#[utoipa::path(get, path = "/v1/jobs/{name}/next", operation_id = "listJobNextRuns", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name"), NextQuery),
    responses(
        (status = 200, description = "The occurrences, in order", body = Vec<crate::model::Timestamp>),
        (status = 404, description = "No job of that name", body = ErrorBody),
    ))]
pub(super) async fn next(
    State(api): ApiState,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> ApiResult {
    let Some(job) = api.sup.store().job(&name).await? else {
        return Err(Error::UnknownJob(name).into());
    };
    let count = super::error::bounded("count", q.count, 5, 100)?;
    ok(next_runs(&job, count)?)
}

/// An execution just enqueued.
#[derive(Serialize, ToSchema)]
pub(super) struct Triggered {
    /// Its id.
    id: Uuid,
}

/// Run a job now, outside its schedule.
#[utoipa::path(post, path = "/v1/jobs/{name}/trigger", operation_id = "triggerJob", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 202, description = "Enqueued", body = Triggered),
        (status = 404, description = "No job of that name", body = ErrorBody),
    ))]
pub(super) async fn trigger(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    let id = api.sup.trigger_job(&name).await?;
    with_status(StatusCode::ACCEPTED, Triggered { id })
}

/// A job's paused flag, as now set.
#[derive(Serialize, ToSchema)]
pub(super) struct JobPaused {
    /// The job.
    job: String,
    /// Whether it is paused.
    paused: bool,
}

/// Pause a job: it starts nothing until resumed.
#[utoipa::path(post, path = "/v1/jobs/{name}/pause", operation_id = "pauseJob", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 200, description = "Paused", body = JobPaused),
        (status = 404, description = "No job of that name", body = ErrorBody),
    ))]
pub(super) async fn pause(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    api.sup.pause_job(&name).await?;
    ok(JobPaused {
        job: name,
        paused: true,
    })
}

/// Resume a paused job.
#[utoipa::path(post, path = "/v1/jobs/{name}/resume", operation_id = "resumeJob", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 200, description = "Resumed", body = JobPaused),
        (status = 404, description = "No job of that name", body = ErrorBody),
    ))]
pub(super) async fn resume(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    api.sup.resume_job(&name).await?;
    ok(JobPaused {
        job: name,
        paused: false,
    })
}

/// A job as `job add` defines it: its fields, with the same defaults.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobBody {
    /// Its name (on PUT, the one the path names).
    #[schema(value_type = Name)]
    name: String,
    /// The handler it runs.
    #[schema(value_type = Name)]
    handler: String,
    /// A cron expression as in crontab(5), 6 fields with seconds first,
    /// or `@hourly`, `@daily` ... At most one of `cron`, `every`, `at`
    /// and `daemon`; with none, the job runs once, now.
    #[schema(value_type = Option<contract::CronText>)]
    cron: Option<String>,
    /// The cron expression's IANA time zone (UTC if absent; needs `cron`).
    #[schema(value_type = Option<contract::TimeZone>)]
    tz: Option<String>,
    /// Run every this long, from now or from `start`.
    #[schema(value_type = Option<contract::Duration>)]
    every: Option<String>,
    /// No occurrence before this time; an interval's first occurrence.
    #[schema(value_type = Option<String>, format = DateTime)]
    start: Option<String>,
    /// Run once, at this time.
    #[schema(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
    /// Keep one execution running, restarted when it ends.
    #[serde(default)]
    daemon: bool,
    /// No occurrence after this time.
    #[schema(value_type = Option<String>, format = DateTime)]
    end: Option<String>,
    /// The input of every execution.
    #[serde(default)]
    payload: Value,
    /// The handler's mode if absent.
    mode: Option<Mode>,
    /// Retries of a failed execution.
    #[serde(default)]
    #[schema(maximum = 10_000)]
    retries: u32,
    /// The first retry's delay, doubling, with jitter (1s if absent); a
    /// daemon's restart delay.
    #[schema(value_type = Option<contract::Duration>)]
    backoff: Option<String>,
    /// Wall-clock limit of each execution.
    #[schema(value_type = Option<contract::Duration>)]
    timeout: Option<String>,
    /// Higher runs first.
    #[serde(default)]
    priority: i32,
    /// The queue its executions wait in (`default` if absent).
    #[schema(value_type = Option<Name>)]
    queue: Option<String>,
    /// Added paused (a replaced job that was paused stays paused).
    #[serde(default)]
    paused: bool,
    /// When an occurrence meets an active run (`skip` if absent).
    overlap: Option<Overlap>,
    /// Occurrences missed while no supervisor ran (`run-once` if absent).
    misfire: Option<Misfire>,
    /// Complete the job after this many runs.
    #[schema(minimum = 1)]
    max_runs: Option<u64>,
    /// Most of its executions running at once.
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    max_parallel: Option<u32>,
    /// Its executions' concurrency key (the queue's key limit caps how
    /// many with one key run at once).
    #[schema(value_type = Option<Name>)]
    concurrency_key: Option<String>,
    /// Jobs enqueued when one of its executions ends, each with it as its
    /// parent; they must exist.
    #[serde(default)]
    #[schema(value_type = Vec<Name>, max_items = 100)]
    then: Vec<String>,
    /// Which ends enqueue the `then` jobs: one for all, or one per job
    /// (`success` if absent).
    #[serde(default)]
    #[schema(max_items = 100)]
    then_on: Vec<ChainOn>,
    /// What it is for, for people.
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    description: Option<String>,
    /// The handler that decides, before each occurrence, whether it runs:
    /// output `true` runs it, `false` records it as `skipped`, a failure
    /// fails it. It must exist.
    #[schema(value_type = Option<Name>)]
    condition: Option<String>,
    /// Retention keeps its this many newest ended executions however old,
    /// besides those its age rule keeps.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_i64)]
    keep_last: Option<u64>,
    /// Alert `job.failing` once its last this many runs have failed.
    #[schema(minimum = 1, maximum = 1000)]
    alert_after: Option<u32>,
    /// Alert `job.late` when a scheduled occurrence has not started this
    /// long after it was due (at least 1s).
    #[schema(value_type = Option<contract::Duration>)]
    alert_late: Option<String>,
    /// Alert `job.silent` when it has not succeeded for this long (at
    /// least 1s).
    #[schema(value_type = Option<contract::Duration>)]
    expect_every: Option<String>,
    /// Meta given to each of its runs.
    #[schema(value_type = Option<contract::MetaObject>)]
    meta: Option<crate::model::Meta>,
    /// Tags given to each of its runs.
    #[schema(value_type = Option<contract::Tags>)]
    tags: Option<Vec<String>>,
}

impl JobBody {
    /// The definition of the job, or why its fields do not go together
    /// (what the document cannot say: 422).
    fn definition(self) -> Result<Definition, ApiError> {
        let b = self;
        let time = |what: &str, s: Option<String>| -> Result<Option<i64>, ApiError> {
            s.map(|s| rfc3339_micros(what, &s)).transpose()
        };
        let duration = |what: &str, s: Option<String>| -> Result<Option<StdDuration>, ApiError> {
            s.map(|s| {
                contract::duration(&s).map_err(|e| ApiError::unprocessable(format!("{what}: {e}")))
            })
            .transpose()
        };
        let defaults = Definition::new(b.name, b.handler);
        Ok(Definition {
            when: When {
                cron: b.cron,
                tz: b.tz,
                every: duration("every", b.every)?,
                start: time("start", b.start)?,
                at: time("at", b.at)?,
                daemon: b.daemon,
            },
            payload: b.payload,
            mode: b.mode,
            priority: b.priority,
            queue: b.queue.unwrap_or(defaults.queue.clone()),
            retries: b.retries,
            backoff: duration("backoff", b.backoff)?.unwrap_or(defaults.backoff),
            timeout: duration("timeout", b.timeout)?,
            overlap: b.overlap.unwrap_or_default(),
            misfire: b.misfire.unwrap_or_default(),
            max_parallel: b.max_parallel,
            concurrency_key: b.concurrency_key,
            max_runs: b.max_runs,
            end: time("end", b.end)?,
            paused: b.paused,
            then: b.then,
            then_on: b.then_on,
            description: b.description,
            condition: b.condition,
            keep_last: b.keep_last,
            alerts: crate::model::JobAlerts {
                after_failures: b.alert_after,
                late_ms: duration("alert_late", b.alert_late)?.map(|d| d.as_millis() as u64),
                expect_every_ms: duration("expect_every", b.expect_every)?
                    .map(|d| d.as_millis() as u64),
            },
            meta: b.meta.unwrap_or_default(),
            tags: b.tags.unwrap_or_default(),
            ..defaults
        })
    }
}

/// A job as the API shows it: its definition and state, whether the
/// configuration file declares it, and its next runs.
#[derive(Serialize, ToSchema)]
pub(super) struct JobView {
    #[serde(flatten)]
    job: Job,
    /// Declared in the configuration file, which owns it: the API and the
    /// CLI neither change nor remove it.
    declared: bool,
    /// Its next 5 occurrences from now (none for a daemon, a complete job,
    /// or after its end).
    next_runs: Vec<crate::model::Timestamp>,
}

/// The next `count` occurrences of `job` from now.
fn next_runs(job: &Job, count: usize) -> Result<Vec<crate::model::Timestamp>, ApiError> {
    if job.completed_at.is_some() {
        return Ok(Vec::new());
    }
    let schedule = crate::schedule::Schedule::from_spec(&job.spec.schedule)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let from = crate::model::now_micros().max(job.spec.start_at.map_or(i64::MIN, |s| s - 1));
    Ok(schedule
        .occurrences(from, count)
        .into_iter()
        .take_while(|t| job.spec.end_at.is_none_or(|end| *t <= end))
        .map(crate::model::Timestamp)
        .collect())
}

/// Job `name` as the API shows it.
async fn view(api: &super::Api, name: &str) -> ApiResult {
    let Some(job) = api.sup.store().job(name).await? else {
        return Err(Error::UnknownJob(name.to_string()).into());
    };
    let declared = api
        .sup
        .store()
        .store()
        .declared("job")
        .await?
        .iter()
        .any(|n| n == name);
    let next_runs = next_runs(&job, 5)?;
    ok(JobView {
        job,
        declared,
        next_runs,
    })
}

/// Create a job, as `job add` does.
#[utoipa::path(post, path = "/v1/jobs", operation_id = "createJob", tag = "jobs", request_body = JobBody,
    responses(
        (status = 201, description = "Created", body = JobView),
        (status = 404, description = "No such handler", body = ErrorBody),
        (status = 409, description = "A job of that name exists (`job_exists`), or the configuration file declares it (`declared_in_config`)", body = ErrorBody),
        (status = 422, description = "Fields that do not go together: a cron expression that does not parse, a schedule with no occurrence in the job's window, a chained job that does not exist, an executable handler asked to run inproc", body = ErrorBody),
    ))]
pub(super) async fn create(State(api): ApiState, b: Bytes) -> ApiResult {
    let b = body::<JobBody>(&b)?;
    let name = b.name.clone();
    let spec = b
        .definition()?
        .spec(crate::model::now_micros())
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    api.sup.add_job(spec).await?;
    let mut r = view(&api, &name).await?;
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

/// Replace a job, as `job add --replace` does: its history and counts
/// stay with it; without `start` or `at` so does its anchor; a paused job
/// stays paused.
#[utoipa::path(put, path = "/v1/jobs/{name}", operation_id = "replaceJob", tag = "jobs", request_body = JobBody,
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 200, description = "Replaced", body = JobView),
        (status = 404, description = "No job of that name, or no such handler", body = ErrorBody),
        (status = 409, description = "The configuration file declares it (`declared_in_config`)", body = ErrorBody),
        (status = 422, description = "Fields that do not go together (as on POST), or a name other than the path's", body = ErrorBody),
    ))]
pub(super) async fn replace(State(api): ApiState, Path(name): Path<String>, b: Bytes) -> ApiResult {
    let b = body::<JobBody>(&b)?;
    if b.name != name {
        return Err(ApiError::unprocessable(format!(
            "name: {:?} is not the job the path names ({name:?})",
            b.name
        )));
    }
    let d = b.definition()?;
    let keep_anchor = !d.when.fixes_start();
    let spec = d
        .spec(crate::model::now_micros())
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    api.sup.replace_job(spec, keep_anchor).await?;
    view(&api, &name).await
}

/// A job removed.
#[derive(Serialize, ToSchema)]
pub(super) struct JobRemoved {
    /// The job.
    job: String,
    /// Always true.
    removed: bool,
}

/// Remove a job; its executions stay as history (a daemon's running one
/// is cancelled).
#[utoipa::path(delete, path = "/v1/jobs/{name}", operation_id = "removeJob", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 200, description = "Removed", body = JobRemoved),
        (status = 404, description = "No job of that name", body = ErrorBody),
        (status = 409, description = "The configuration file declares it (`declared_in_config`)", body = ErrorBody),
    ))]
pub(super) async fn remove(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    api.sup.remove_job(&name).await?;
    ok(JobRemoved {
        job: name,
        removed: true,
    })
}

/// A schedule to preview.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PreviewQuery {
    /// A cron expression (one of `cron`, `every` and `at`).
    #[param(value_type = Option<contract::CronText>)]
    cron: Option<String>,
    /// The cron expression's IANA time zone (UTC if absent; needs `cron`).
    #[param(value_type = Option<contract::TimeZone>)]
    tz: Option<String>,
    /// An interval.
    #[param(value_type = Option<contract::Duration>)]
    every: Option<String>,
    /// The interval's first occurrence (needs `every`).
    #[param(value_type = Option<String>, format = DateTime)]
    start: Option<String>,
    /// A time it runs once.
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
    /// From this time (now if absent).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// How many occurrences.
    #[param(minimum = 1, maximum = 1000, default = 10)]
    count: Option<usize>,
}

/// The next occurrences of a schedule, as `job preview --json` prints
/// them: RFC 3339 times in UTC.
#[utoipa::path(get, path = "/v1/preview", operation_id = "previewSchedule", tag = "jobs", params(PreviewQuery),
    responses(
        (status = 200, description = "The occurrences, in order", body = Vec<String>),
        (status = 400, description = "No schedule, more than one, or one that does not parse", body = ErrorBody),
    ))]
pub(super) async fn preview(
    axum::extract::Query(q): axum::extract::Query<PreviewQuery>,
) -> ApiResult {
    let count = super::error::bounded("count", q.count, 10, 1000)?;
    if q.cron.is_none() && q.every.is_none() && q.at.is_none() {
        return Err(ApiError::invalid("give one of cron, every and at"));
    }
    if q.start.is_some() && q.every.is_none() {
        return Err(ApiError::invalid("start goes with every only"));
    }
    let from = match q.from {
        Some(t) => rfc3339_micros("from", &t)?,
        None => crate::model::now_micros(),
    };
    let when = When {
        every: q
            .every
            .map(|e| contract::duration(&e))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("every: {e}")))?,
        start: q.start.map(|t| rfc3339_micros("start", &t)).transpose()?,
        at: q.at.map(|t| rfc3339_micros("at", &t)).transpose()?,
        cron: q.cron,
        tz: q.tz,
        daemon: false,
    };
    let times = when
        .occurrences(from, count)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    ok(times
        .into_iter()
        .map(crate::model::format_rfc3339)
        .collect::<Vec<_>>())
}

/// An RFC 3339 time, as microseconds since the epoch.
fn rfc3339_micros(what: &str, s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| ApiError::invalid(format!("{what}: {s:?} is not an RFC 3339 time: {e}")))
}

/// What the document says of a job's body besides its fields' types: at
/// most one schedule, and a zone only with a cron expression.
pub(super) fn declare(doc: &mut Value) {
    let present = |field: &str| {
        if field == "daemon" {
            serde_json::json!({"required": ["daemon"], "properties": {"daemon": {"const": true}}})
        } else {
            serde_json::json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}})
        }
    };
    let schedules = ["cron", "every", "at", "daemon"];
    let mut pairs = Vec::new();
    for (i, a) in schedules.iter().enumerate() {
        for b in &schedules[i + 1..] {
            pairs.push(serde_json::json!({"allOf": [present(a), present(b)]}));
        }
    }
    doc["components"]["schemas"]["JobBody"]["allOf"] = serde_json::json!([
        {"not": {"anyOf": pairs}},
        {"if": present("tz"), "then": present("cron")},
    ]);
}
