//! Webhooks: list, show, create, replace, remove. URLs are shown with
//! their path and query hidden (a chat service's webhook URL is its own
//! secret).

use super::error::{ok, with_status, ApiError, ApiResult};
use super::{ApiState, ErrorBody};
use crate::model::WebhookSpec;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// List webhooks, by name.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, description = "Every webhook, by name (URLs redacted)", body = Vec<WebhookSpec>)))]
pub(super) async fn list(State(api): ApiState) -> ApiResult {
    let all = api.sup.store().webhooks().await?;
    ok(all
        .into_iter()
        .map(WebhookSpec::redacted)
        .collect::<Vec<_>>())
}

/// Show a webhook.
#[utoipa::path(get, path = "/v1/webhooks/{name}", operation_id = "showWebhook", tag = "webhooks",
    params(("name" = crate::contract::Name, Path, description = "The webhook's name")),
    responses(
        (status = 200, description = "The webhook (URL redacted)", body = WebhookSpec),
        (status = 404, description = "No webhook of that name", body = ErrorBody),
    ))]
pub(super) async fn show(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    match api.sup.store().webhook(&name).await? {
        Some(w) => ok(w.redacted()),
        None => Err(ApiError::not_found(format!("no webhook named {name:?}"))),
    }
}

fn spec(b: &Bytes) -> Result<WebhookSpec, ApiError> {
    let spec: WebhookSpec = serde_json::from_slice(b)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    spec.check().map_err(ApiError::unprocessable)?;
    Ok(spec)
}

/// Add a webhook, as `webhook add` does: from the next change of any run,
/// the events it hears are delivered.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "createWebhook", tag = "webhooks", request_body = WebhookSpec,
    responses(
        (status = 201, description = "Created (URL redacted)", body = WebhookSpec),
        (status = 409, description = "A webhook of that name exists (`webhook_exists`)", body = ErrorBody),
        (status = 422, description = "A URL that is not http(s), an unknown event, a bad name, too many webhooks, or one the configuration file declares", body = ErrorBody),
    ))]
pub(super) async fn create(State(api): ApiState, b: Bytes) -> ApiResult {
    let spec = spec(&b)?;
    api.sup.add_webhook(&spec, false).await?;
    with_status(StatusCode::CREATED, spec.redacted())
}

/// Replace a webhook, or add it under that name.
#[utoipa::path(put, path = "/v1/webhooks/{name}", operation_id = "replaceWebhook", tag = "webhooks", request_body = WebhookSpec,
    params(("name" = crate::contract::Name, Path, description = "The webhook's name")),
    responses(
        (status = 200, description = "Set (URL redacted)", body = WebhookSpec),
        (status = 422, description = "As on POST, or a name other than the path's", body = ErrorBody),
    ))]
pub(super) async fn replace(State(api): ApiState, Path(name): Path<String>, b: Bytes) -> ApiResult {
    let spec = spec(&b)?;
    if spec.name != name {
        return Err(ApiError::unprocessable(format!(
            "name: {:?} is not the webhook the path names ({name:?})",
            spec.name
        )));
    }
    api.sup.add_webhook(&spec, true).await?;
    ok(spec.redacted())
}

/// A webhook removed.
#[derive(Serialize, ToSchema)]
pub(super) struct WebhookRemoved {
    /// The webhook.
    webhook: String,
    /// Always true.
    removed: bool,
}

/// Remove a webhook; deliveries it made already stay, and fail when they
/// run (there is nowhere to deliver to).
#[utoipa::path(delete, path = "/v1/webhooks/{name}", operation_id = "removeWebhook", tag = "webhooks",
    params(("name" = crate::contract::Name, Path, description = "The webhook's name")),
    responses(
        (status = 200, description = "Removed", body = WebhookRemoved),
        (status = 404, description = "No webhook of that name", body = ErrorBody),
        (status = 422, description = "The configuration file declares it", body = ErrorBody),
    ))]
pub(super) async fn remove(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    if !api.sup.remove_webhook(&name).await? {
        return Err(ApiError::not_found(format!("no webhook named {name:?}")));
    }
    ok(WebhookRemoved {
        webhook: name,
        removed: true,
    })
}
