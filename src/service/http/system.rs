//! Health, metrics, statistics and the OpenAPI document.

use super::error::{ok, ApiError, ApiResult};
use super::{ApiState, ErrorBody};
use crate::store::JobStats;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// A healthy node.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `ok` (an unhealthy node answers 503).
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
    /// Whether the database answered.
    database: bool,
    /// Time since the scheduler's loop last went round.
    scheduler_silent_ms: u64,
    /// Time since the dispatcher's loop last went round.
    dispatcher_silent_ms: u64,
    /// This node's id.
    node: String,
}

/// Longest silence of a loop before the node counts as unhealthy.
const SILENCE: Duration = Duration::from_secs(30);

/// Health: the database answers, and the scheduler and dispatcher loops go
/// round. Needs no token.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "system",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "Unhealthy: the database or a loop is stuck", body = ErrorBody),
    ))]
pub(super) async fn healthz(State(api): ApiState) -> Response {
    let (scheduler, dispatcher) = api.sup.liveness();
    let database = api.sup.store().queues().await.is_ok();
    if database && scheduler < SILENCE && dispatcher < SILENCE {
        return Json(Health {
            status: "ok",
            database,
            scheduler_silent_ms: scheduler.as_millis() as u64,
            dispatcher_silent_ms: dispatcher.as_millis() as u64,
            node: api.sup.node_id().to_string(),
        })
        .into_response();
    }
    let mut why = Vec::new();
    if !database {
        why.push("the database does not answer".to_string());
    }
    for (name, silent) in [("scheduler", scheduler), ("dispatcher", dispatcher)] {
        if silent >= SILENCE {
            why.push(format!(
                "the {name} has been silent for {}s",
                silent.as_secs()
            ));
        }
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unhealthy",
        format!("unhealthy: {}", why.join("; ")),
    )
    .into_response()
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(api): ApiState) -> ApiResult {
    let store = api.sup.store();
    let snapshot = crate::metrics::Snapshot {
        executions: store.counts().await?,
        queues: store
            .queues()
            .await?
            .into_iter()
            .map(|q| (q.name, q.pending, q.running))
            .collect(),
        running: api.sup.running_count(),
        relay_queued: api.sup.relay_queued(),
        durations: api.sup.durations(),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&snapshot),
    )
        .into_response())
}

/// This document: OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapiDocument", tag = "system",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(super) async fn openapi(State(api): ApiState) -> ApiResult {
    ok(&api.doc)
}

/// Execution statistics per job.
#[utoipa::path(get, path = "/v1/stats", operation_id = "listStats", tag = "system",
    responses((status = 200, description = "One entry per job that has executions", body = Vec<JobStats>)))]
pub(super) async fn stats(State(api): ApiState) -> ApiResult {
    ok(api.sup.store().stats(None).await?)
}
