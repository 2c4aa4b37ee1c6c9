//! Queues: their limits, pause and resume.

use super::error::{body, ok, ApiError, ApiResult};
use super::{ApiState, ErrorBody};
use crate::contract::{self, RateText, MAX_LIMIT};
use crate::store::{QueueChange, QueueInfo};
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// List queues: their limits, whether paused, and what waits and runs.
#[utoipa::path(get, path = "/v1/queues", operation_id = "listQueues", tag = "queues",
    responses((status = 200, description = "Every queue that has a setting or an execution", body = Vec<QueueInfo>)))]
pub(super) async fn list(State(api): ApiState) -> ApiResult {
    ok(api.sup.store().queues().await?)
}

/// A field that may be absent (leave it), `null` (remove it) or a value.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// What to change of a queue: each field given is set, `null` removes a
/// limit, and a field left out stays as it is.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueBody {
    /// Most executions running at once.
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    limit: Option<Option<u32>>,
    /// Most running executions per concurrency key.
    #[serde(default, deserialize_with = "present")]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    key_limit: Option<Option<u32>>,
    /// Starts allowed per sliding window, across all nodes.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateText>)]
    rate: Option<Option<String>>,
    /// Paused queues start nothing new.
    paused: Option<bool>,
}

impl QueueBody {
    pub(super) fn change(self) -> Result<QueueChange, ApiError> {
        let rate = match self.rate {
            None => None,
            Some(None) => Some(None),
            Some(Some(r)) => Some(Some(
                contract::rate(&r).map_err(|e| ApiError::invalid(format!("rate: {e}")))?,
            )),
        };
        for limit in [self.limit, self.key_limit].into_iter().flatten().flatten() {
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(ApiError::invalid(format!(
                    "limits are from 1 to {MAX_LIMIT}"
                )));
            }
        }
        Ok(QueueChange {
            limit: self.limit,
            key_limit: self.key_limit,
            rate,
            paused: self.paused,
        })
    }
}

/// Set a queue's limits (it is made if it does not exist).
#[utoipa::path(put, path = "/v1/queues/{name}", operation_id = "setQueue", tag = "queues",
    params(("name" = crate::contract::Name, Path, description = "The queue's name")),
    request_body = QueueBody,
    responses((status = 200, description = "The queue as now set", body = QueueInfo)))]
pub(super) async fn put(State(api): ApiState, Path(name): Path<String>, b: Bytes) -> ApiResult {
    let change = body::<QueueBody>(&b)?.change()?;
    api.sup.set_queue(&name, &change).await?;
    let queues = api.sup.store().queues().await?;
    match queues.into_iter().find(|q| q.name == name) {
        Some(q) => ok(q),
        None => Err(ApiError::not_found(format!("no queue named {name:?}"))),
    }
}

/// A queue's paused flag, as now set.
#[derive(Serialize, ToSchema)]
pub(super) struct QueuePaused {
    /// The queue.
    queue: String,
    /// Whether it is paused.
    paused: bool,
}

async fn set_paused(api: &super::Api, name: String, paused: bool) -> ApiResult {
    let change = QueueChange {
        paused: Some(paused),
        ..Default::default()
    };
    api.sup.set_queue(&name, &change).await?;
    ok(QueuePaused {
        queue: name,
        paused,
    })
}

/// Pause a queue: it starts nothing new until resumed.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", operation_id = "pauseQueue", tag = "queues",
    params(("name" = crate::contract::Name, Path, description = "The queue's name")),
    responses((status = 200, description = "Paused", body = QueuePaused), (status = 422, description = "Not a queue name", body = ErrorBody)))]
pub(super) async fn pause(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    set_paused(&api, name, true).await
}

/// Resume a paused queue.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", operation_id = "resumeQueue", tag = "queues",
    params(("name" = crate::contract::Name, Path, description = "The queue's name")),
    responses((status = 200, description = "Resumed", body = QueuePaused), (status = 422, description = "Not a queue name", body = ErrorBody)))]
pub(super) async fn resume(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    set_paused(&api, name, false).await
}
