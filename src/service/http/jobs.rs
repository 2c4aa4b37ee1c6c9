//! Jobs: list, show, trigger, pause, resume.

use super::error::{ok, with_status, ApiResult};
use super::{ApiState, ErrorBody};
use crate::model::Job;
use crate::Error;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// List jobs.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    responses((status = 200, description = "Every job, by name", body = Vec<Job>)))]
pub(super) async fn list(State(api): ApiState) -> ApiResult {
    ok(api.sup.store().jobs().await?)
}

/// Show a job: its definition and scheduling state.
#[utoipa::path(get, path = "/v1/jobs/{name}", tag = "jobs",
    params(("name" = crate::contract::Name, Path, description = "The job's name")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No job of that name", body = ErrorBody),
    ))]
pub(super) async fn show(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    match api.sup.store().job(&name).await? {
        Some(j) => ok(j),
        None => Err(Error::UnknownJob(name).into()),
    }
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
#[utoipa::path(get, path = "/v1/jobs/{name}/next", tag = "jobs",
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
    if job.completed_at.is_some() {
        return ok(Vec::<crate::model::Timestamp>::new());
    }
    let schedule = crate::schedule::Schedule::from_spec(&job.spec.schedule)
        .map_err(|e| super::error::ApiError::unprocessable(e.to_string()))?;
    let from = crate::model::now_micros().max(job.spec.start_at.map_or(i64::MIN, |s| s - 1));
    let times: Vec<crate::model::Timestamp> = schedule
        .occurrences(from, count)
        .into_iter()
        .take_while(|t| job.spec.end_at.is_none_or(|end| *t <= end))
        .map(crate::model::Timestamp)
        .collect();
    ok(times)
}

/// An execution just enqueued.
#[derive(Serialize, ToSchema)]
pub(super) struct Triggered {
    /// Its id.
    id: Uuid,
}

/// Run a job now, outside its schedule.
#[utoipa::path(post, path = "/v1/jobs/{name}/trigger", tag = "jobs",
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
#[utoipa::path(post, path = "/v1/jobs/{name}/pause", tag = "jobs",
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
#[utoipa::path(post, path = "/v1/jobs/{name}/resume", tag = "jobs",
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
