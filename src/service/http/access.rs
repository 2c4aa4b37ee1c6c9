//! Each request's access, from the tokens and roles of `super::auth` and
//! the dashboard's sessions (`super::ui`): the middleware that lets a
//! request through or refuses it, and the same rules written into the
//! OpenAPI document.

use super::auth::{peer, reads, record_failure, too_many, Auth, Role, PUBLIC};
use super::{Api, ApiError};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) async fn authorize(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let peer = peer(&req);
    if let Some(wait) = peer.and_then(|p| api.failures.locked(p.ip())) {
        return too_many(wait);
    }
    let path = req.uri().path();
    if api.auth.token.is_none() || PUBLIC.contains(&path) || super::ui::public(path) {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let role =
        match bearer {
            Some(_) => api.auth.role(bearer),
            None => match super::ui::session_id(req.headers()).and_then(|id| api.sessions.get(id)) {
                Some(s) if reads(req.method()) => Some(s.role),
                Some(s) if super::ui::same_origin_action(req.headers(), &s) => Some(s.role),
                Some(_) => return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "an action with the session cookie needs its X-CSRF-Token, from this origin",
                )
                .into_response(),
                None => None,
            },
        };
    match role {
        Some(Role::Act) => next.run(req).await,
        Some(Role::Read) if reads(req.method()) => next.run(req).await,
        Some(Role::Read) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the read-only token cannot act",
        )
        .into_response(),
        None => {
            // Only a credential given and refused is a failed
            // authentication: a request with none learns nothing, and a
            // session cookie from before a restart (or expired) is a
            // dashboard left open, not a guess (its id is 256 random bits).
            if bearer.is_some() {
                record_failure(&api, peer, "a wrong bearer token");
            }
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token (or the dashboard's session) is required",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Writes the security that `auth` applies into `doc`: none without a
/// token; else the bearer scheme on every operation but the public ones,
/// with their 401 (and 403 on actions, where a read-only token exists).
pub(super) fn declare(doc: &mut Value, auth: &Auth) {
    if auth.token.is_none() {
        return;
    }
    let description = if auth.readonly.is_some() {
        "The API token; the read-only token (`token_readonly`) may call GET routes only"
    } else {
        "The API token"
    };
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": description},
        "session": {"type": "apiKey", "in": "cookie", "name": super::ui::COOKIE,
            "description": "The dashboard's session, from its login form; actions with it also need the session's X-CSRF-Token header"}});
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops {
            if PUBLIC.contains(&path.as_str()) {
                op["security"] = json!([]);
                continue;
            }
            let act = method != "get" && method != "head";
            op["security"] = json!([{"bearer": []}, {"session": []}]);
            op["responses"]["401"] = json!({"description": "No valid token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
            if act && auth.readonly.is_some() {
                op["responses"]["403"] = json!({"description": "The read-only token cannot act",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
            }
        }
    }
}
