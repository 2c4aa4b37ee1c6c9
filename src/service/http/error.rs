//! The one error type of the API, and the middleware that makes every
//! error JSON, axum's own rejections included.

use crate::store::StoreError;
use crate::Error;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// An API error: HTTP status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A header to answer with (`Retry-After`).
    header: Option<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

/// Every error's body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// Stable, for programs to switch on.
    #[schema(schema_with = code_schema)]
    code: &'static str,
    /// For people: one line.
    message: String,
}

/// Every error code.
const CODES: [&str; 21] = [
    "invalid",
    "unauthorized",
    "forbidden",
    "cross_origin",
    "host_not_allowed",
    "too_many_failures",
    "too_many_streams",
    "too_large",
    "timeout",
    "not_found",
    "method_not_allowed",
    "finished",
    "not_retryable",
    "not_holdable",
    "job_exists",
    "webhook_exists",
    "id_taken",
    "declared_in_config",
    "unsupported_media_type",
    "internal",
    "unhealthy",
];

fn code_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::model::schema(serde_json::json!({"type": "string", "enum": CODES}))
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    /// The error, answered with header `name: value` too.
    pub(super) fn with_header(
        mut self,
        name: axum::http::HeaderName,
        value: axum::http::HeaderValue,
    ) -> Self {
        self.header = Some((name, value));
        self
    }

    pub(super) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// A request the document forbids.
    pub(super) fn invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", msg)
    }

    /// A request the document allows that asks for something inconsistent.
    pub(super) fn unprocessable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", msg)
    }

    /// The same error, its message prefixed with what it is about.
    pub(super) fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(super) fn conflict(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if let Some((name, value)) = self.header {
            r.headers_mut().insert(name, value);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::NoParent(_) = e {
            return ApiError::unprocessable(e.to_string());
        }
        tracing::error!(error = %crate::error_chain(&e), "API request failed in the database");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the service log)",
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s.into(),
            Error::UnknownHandler(h) => ApiError::not_found(format!("unknown handler {h:?}")),
            e @ Error::UnknownJob(_) => ApiError::not_found(e.to_string()),
            e @ Error::JobExists(_) => ApiError::conflict("job_exists", e.to_string()),
            e @ Error::WebhookExists(_) => ApiError::conflict("webhook_exists", e.to_string()),
            e @ Error::IdTaken(_) => ApiError::conflict("id_taken", e.to_string()),
            e @ Error::Declared { .. } => ApiError::conflict("declared_in_config", e.to_string()),
            // Faults of the server, not of the request.
            e @ (Error::Panicked { .. } | Error::Unwritten(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            other => ApiError::unprocessable(other.to_string()),
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn ok(v: impl Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

pub(super) fn with_status(status: StatusCode, v: impl Serialize) -> ApiResult {
    Ok((status, Json(v)).into_response())
}

/// A count parameter (`limit`, `count`): `default` if absent, else from 1
/// to `max` (what the document states; checked again where it is used).
pub(super) fn bounded(
    what: &str,
    v: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match v.unwrap_or(default) {
        n @ 1.. if n <= max => Ok(n),
        _ => Err(ApiError::invalid(format!("{what}: from 1 to {max}"))),
    }
}

/// Why a body of at most `max` bytes could not be read: it was larger
/// (413), or did not arrive in time (408).
pub(super) fn body_error(e: &axum::Error, max: usize) -> ApiError {
    if super::server::BodyTimedOut::caused(e) {
        return ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", e.to_string());
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is over {max} bytes"),
    )
}

/// A JSON body that [`super::validate`] has checked already; an empty one
/// (or `null`) is the type's default.
pub(super) fn body<T: serde::de::DeserializeOwned + Default>(b: &Bytes) -> Result<T, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("invalid JSON body: {e}"));
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let v: serde_json::Value = serde_json::from_slice(b).map_err(invalid)?;
    if v.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(v).map_err(invalid)
}

/// Every operation answers errors as [`ErrorBody`]: the document says so
/// for the statuses each can give (400 for a request it forbids, 413 and
/// 415 for bodies) and as the default.
pub(super) fn declare(doc: &mut serde_json::Value) {
    let error = |what: &str| {
        serde_json::json!({"description": what, "content": {"application/json": {"schema":
            {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops.iter_mut() {
            let acts = matches!(method.as_str(), "post" | "put" | "patch" | "delete");
            let has_body = op.get("requestBody").is_some();
            let takes_input = op.get("parameters").is_some() || has_body;
            let responses = &mut op["responses"];
            if takes_input && responses.get("400").is_none() {
                responses["400"] = error("A request this document forbids");
            }
            if has_body {
                responses["413"] = error("A body over 1 MiB");
            }
            if acts {
                responses["415"] = error(
                    "No `Content-Type: application/json` (every action needs it, body or not)",
                );
            }
            responses["default"] = error("An error");
        }
    }
}

/// Makes every error JSON, including axum's own rejections (bad path
/// parameter, body too large, wrong method), keeping their headers
/// (`Allow` on a 405).
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            s if s.is_server_error() => "internal",
            _ => "invalid",
        };
        let (mut parts, body) = r.into_parts();
        // axum's rejections explain themselves in a short text body (no
        // SQL can be in it: store errors never take this path).
        let reason = status.canonical_reason().unwrap_or("error").to_string();
        let text = axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|t| !t.is_empty());
        let fresh = ApiError::new(status, code, text.unwrap_or(reason)).into_response();
        let (fresh_parts, body) = fresh.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.extend(fresh_parts.headers);
        return Response::from_parts(parts, body);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_of_the_server_is_a_500_and_a_bad_request_a_4xx() {
        let panicked = Error::Panicked {
            actor: crate::supervisor::Actor::Dispatcher,
            message: "boom".into(),
        };
        for e in [panicked, Error::Unwritten("gone".into())] {
            let r = ApiError::from(e).into_response();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        let r = ApiError::from(Error::Invalid("no".into())).into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = ApiError::from(Error::UnknownJob("j".into())).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
