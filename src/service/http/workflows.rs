//! Workflows: run, list, show, cancel.

use super::error::{body, ok, with_status, ApiError, ApiResult};
use super::executions::CancelBody;
use super::{ApiState, ErrorBody};
use crate::workflow::{Submitted, Summary, View, WorkflowSpec};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// How many.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// At most this many, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// List workflows, newest first, with where their steps stand.
#[utoipa::path(get, path = "/v1/workflows", operation_id = "listWorkflows", tag = "workflows", params(ListQuery),
    responses((status = 200, description = "The workflows, newest first", body = Vec<Summary>)))]
pub(super) async fn list(State(api): ApiState, Query(q): Query<ListQuery>) -> ApiResult {
    let limit = super::error::bounded("limit", q.limit, 100, super::executions::MAX_LIST)?;
    let all = api.sup.store().workflows(limit).await?;
    ok(all.into_iter().map(Summary::from).collect::<Vec<_>>())
}

/// Run a workflow: every step's execution is inserted in one transaction.
#[utoipa::path(post, path = "/v1/workflows", operation_id = "runWorkflow", tag = "workflows", request_body = WorkflowSpec,
    responses(
        (status = 201, description = "Inserted: its id and each step's execution", body = Submitted),
        (status = 422, description = "Steps that do not fit together: a duplicate name, an unknown step in `after`, a cycle, an unknown handler", body = ErrorBody),
    ))]
pub(super) async fn run(State(api): ApiState, b: Bytes) -> ApiResult {
    let spec: WorkflowSpec = body(&b)?;
    let done = api.sup.workflow(&spec).await?;
    with_status(StatusCode::CREATED, done)
}

/// Show a workflow: its steps in dependency order and its overall status.
#[utoipa::path(get, path = "/v1/workflows/{id}", operation_id = "showWorkflow", tag = "workflows",
    params(("id" = Uuid, Path, description = "The workflow's id")),
    responses(
        (status = 200, description = "The workflow", body = View),
        (status = 404, description = "No such workflow", body = ErrorBody),
    ))]
pub(super) async fn show(State(api): ApiState, Path(id): Path<Uuid>) -> ApiResult {
    match api.sup.store().workflow(id).await? {
        Some((info, spec, execs)) => ok(View::new(info, &spec, execs)),
        None => Err(ApiError::not_found(format!("no workflow {id}"))),
    }
}

/// What a workflow cancel did.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkflowCancelled {
    /// The workflow.
    id: Uuid,
    /// Steps that had not started, now cancelled.
    cancelled: u64,
    /// Running steps whose nodes were asked to stop them.
    requested: u64,
}

/// Cancel every step of a workflow that has not ended.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", operation_id = "cancelWorkflow", tag = "workflows",
    params(("id" = Uuid, Path, description = "The workflow's id")),
    request_body(content = Option<CancelBody>),
    responses(
        (status = 200, description = "What was cancelled and what was asked to stop", body = WorkflowCancelled),
        (status = 404, description = "No such workflow", body = ErrorBody),
    ))]
pub(super) async fn cancel(State(api): ApiState, Path(id): Path<Uuid>, b: Bytes) -> ApiResult {
    let reason = body::<CancelBody>(&b)?.reason();
    match api.sup.cancel_workflow(id, &reason).await? {
        Some(done) => ok(WorkflowCancelled {
            id,
            cancelled: done.cancelled,
            requested: done.requested,
        }),
        None => Err(ApiError::not_found(format!("no workflow {id}"))),
    }
}
