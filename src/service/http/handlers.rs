//! Handlers: what can run.

use super::error::{ok, ApiError, ApiResult};
use super::{ApiState, ErrorBody};
use crate::model::HandlerSpec;
use axum::extract::{Path, State};

/// List handlers, registered and built in. Environment values are
/// never shown: each is `"<redacted>"`.
#[utoipa::path(get, path = "/v1/handlers", operation_id = "listHandlers", tag = "handlers",
    responses((status = 200, description = "Every handler, by name", body = Vec<HandlerSpec>)))]
pub(super) async fn list(State(api): ApiState) -> ApiResult {
    let all = crate::store::all_handlers(&**api.sup.store()).await?;
    ok(all
        .into_iter()
        .map(HandlerSpec::redacted)
        .collect::<Vec<_>>())
}

/// Show a handler: its kind, mode, limits and isolation settings.
#[utoipa::path(get, path = "/v1/handlers/{name}", operation_id = "showHandler", tag = "handlers",
    params(("name" = crate::contract::Name, Path, description = "The handler's name")),
    responses(
        (status = 200, description = "The handler", body = HandlerSpec),
        (status = 404, description = "No handler of that name", body = ErrorBody),
    ))]
pub(super) async fn show(State(api): ApiState, Path(name): Path<String>) -> ApiResult {
    match crate::store::handler_or_builtin(&**api.sup.store(), &name).await? {
        Some(h) => ok(h.redacted()),
        None => Err(ApiError::not_found(format!("no handler named {name:?}"))),
    }
}
