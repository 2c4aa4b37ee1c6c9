//! The HTTP API served by `jobvisor serve`: REST/JSON over the same store
//! and supervisor the CLI uses, Server-Sent Events for live output,
//! `/healthz`, `/metrics` and `/openapi.json`.
//!
//! Listens on 127.0.0.1 by default. Any other address needs a bearer
//! token, compared in constant time. Request bodies are bounded. Every
//! error is JSON, `{"error":{"code":..,"message":..}}`, with a stable code;
//! database errors are logged and answered as `internal` without detail.

use crate::model::{now_micros, Mode, Status};
use crate::store::{ExecFilter, QueueChange, StoreError};
use crate::supervisor::Supervisor;
use crate::{Error, RunSpec};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use jobvisor_worker::Level;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// Every route: method, path, summary. The router and `/openapi.json` are
/// both built from this table; a test checks they agree.
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/healthz",
        "Health: the database answers and the scheduler and dispatcher loops go round",
    ),
    ("GET", "/metrics", "Metrics in the Prometheus text format"),
    ("GET", "/openapi.json", "This document"),
    (
        "GET",
        "/v1/handlers",
        "List handlers (registered and built in)",
    ),
    ("GET", "/v1/handlers/{name}", "Show a handler"),
    ("GET", "/v1/jobs", "List jobs"),
    ("GET", "/v1/jobs/{name}", "Show a job"),
    (
        "POST",
        "/v1/jobs/{name}/trigger",
        "Run a job now, outside its schedule",
    ),
    ("POST", "/v1/jobs/{name}/pause", "Pause a job"),
    ("POST", "/v1/jobs/{name}/resume", "Resume a job"),
    (
        "GET",
        "/v1/executions",
        "List executions, newest first (?status=a,b&job=&handler=&queue=&node=&unique_key=&since=DUR|TIME&until=TIME&before=ID&limit=); pass the last id as before= for the next page",
    ),
    (
        "POST",
        "/v1/executions",
        "Enqueue a run: {handler, payload, mode, queue, priority, retries, timeout_ms, unique_key, unique_for, replace, after, after_policy}; 201 {id, duplicate: false}, or 200 {id, duplicate: true} naming the execution a held unique key went to, with replaced: true when replace changed it",
    ),
    (
        "GET",
        "/v1/executions/{id}",
        "Show an execution, with its parents and children",
    ),
    (
        "POST",
        "/v1/executions/{id}/cancel",
        "Cancel an execution: {reason}",
    ),
    (
        "POST",
        "/v1/executions/{id}/retry",
        "Run a failed, cancelled or interrupted execution again: 201 {id} of the new attempt; 409 if it is running, succeeded or was retried already",
    ),
    (
        "POST",
        "/v1/executions/cancel",
        "Cancel every execution a filter matches: {status, job, handler, queue, node, unique_key, concurrency_key, since, until, reason}, at least one filter; {matched, cancelled, requested}",
    ),
    (
        "POST",
        "/v1/executions/retry",
        "Retry every execution a filter matches: {status, job, handler, queue, node, unique_key, concurrency_key, since, until}, at least one filter; {matched, retried}",
    ),
    (
        "GET",
        "/v1/executions/{id}/logs",
        "Log lines (?after_seq=&level=&limit=)",
    ),
    (
        "GET",
        "/v1/executions/{id}/stream",
        "Server-Sent Events: progress and log lines as they come, then end",
    ),
    (
        "GET",
        "/v1/events",
        "Server-Sent Events: executions starting and finishing on this node",
    ),
    (
        "GET",
        "/v1/queues",
        "List queues: limit, key_limit, rate, tokens (starts the rate allows now), paused, pending, running",
    ),
    (
        "PUT",
        "/v1/queues/{name}",
        "Set a queue's limits: {limit, key_limit, rate: \"N/DUR\", paused}; a field left out stays, null removes it; the queue as now set",
    ),
    ("POST", "/v1/queues/{name}/pause", "Pause a queue"),
    ("POST", "/v1/queues/{name}/resume", "Resume a queue"),
    ("GET", "/v1/stats", "Execution statistics per job"),
    (
        "GET",
        "/v1/workflows",
        "List workflows, newest first (?limit=)",
    ),
    (
        "POST",
        "/v1/workflows",
        "Run a workflow: {name, step: [{name, handler, payload, mode, retries, backoff, timeout, priority, queue, after, after_policy}]}; 201 {id, steps}",
    ),
    (
        "GET",
        "/v1/workflows/{id}",
        "Show a workflow: its steps in dependency order and its overall status",
    ),
    (
        "POST",
        "/v1/workflows/{id}/cancel",
        "Cancel every step of a workflow that has not ended: {reason}",
    ),
];

/// An API error: HTTP status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    fn invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::NoParent(_) = e {
            return ApiError::invalid(e.to_string());
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
            other => ApiError::invalid(other.to_string()),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

struct Api {
    sup: Supervisor,
    token: Option<String>,
}

/// Compares in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

async fn authorize(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        if req.uri().path() != "/healthz" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid bearer token is required",
                )
                .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
    }
    next.run(req).await
}

/// Makes every error JSON, including axum's own rejections (bad path
/// parameter, body too large, wrong method).
async fn json_errors(req: Request, next: Next) -> Response {
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
        // axum's rejections explain themselves in a short text body (no
        // SQL can be in it: store errors never take this path).
        let reason = status.canonical_reason().unwrap_or("error").to_string();
        let text = axum::body::to_bytes(r.into_body(), 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|t| !t.is_empty());
        return ApiError::new(status, code, text.unwrap_or(reason)).into_response();
    }
    r
}

/// The router over `sup`. `token`: required as a bearer token if set.
pub fn router(sup: Supervisor, token: Option<String>) -> Router {
    let api = Arc::new(Api { sup, token });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/handlers", get(handlers))
        .route("/v1/handlers/{name}", get(handler))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{name}", get(job))
        .route("/v1/jobs/{name}/trigger", post(trigger))
        .route("/v1/jobs/{name}/pause", post(pause_job))
        .route("/v1/jobs/{name}/resume", post(resume_job))
        .route("/v1/executions", get(executions).post(enqueue))
        .route("/v1/executions/{id}", get(execution))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/retry", post(retry))
        .route("/v1/executions/cancel", post(cancel_matching))
        .route("/v1/executions/retry", post(retry_matching))
        .route("/v1/executions/{id}/logs", get(logs))
        .route("/v1/executions/{id}/stream", get(stream_execution))
        .route("/v1/events", get(events))
        .route("/v1/queues", get(queues))
        .route("/v1/queues/{name}", put(put_queue))
        .route("/v1/queues/{name}/pause", post(pause_queue))
        .route("/v1/queues/{name}/resume", post(resume_queue))
        .route("/v1/stats", get(stats))
        .route("/v1/workflows", get(workflows).post(run_workflow))
        .route("/v1/workflows/{id}", get(workflow))
        .route("/v1/workflows/{id}/cancel", post(cancel_workflow))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// The API on an address other machines reach, without a token.
#[derive(Debug, thiserror::Error)]
#[error("listening on {0} (not loopback) needs a bearer token: set `token` in the config file or JOBVISOR_API_TOKEN")]
pub struct NeedsToken(pub SocketAddr);

/// Checks the listen address against the token rule.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), NeedsToken> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(NeedsToken(addr));
    }
    Ok(())
}

/// Binds `addr` and serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

fn uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::invalid(format!("invalid execution id {id:?}")))
}

fn workflow_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::invalid(format!("invalid workflow id {id:?}")))
}

fn body<T: serde::de::DeserializeOwned + Default>(b: &Bytes) -> Result<T, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

/// Reads `data` as each JSON body and (after a `?`) each query string the
/// API takes, with the checks their handlers make: for fuzzing, where
/// nothing may panic.
#[doc(hidden)]
pub fn parse_inputs(data: &[u8]) {
    let b = Bytes::copy_from_slice(data);
    if let Ok(e) = body::<EnqueueBody>(&b) {
        std::hint::black_box(e.handler.is_empty());
    }
    let _ = body::<CancelBody>(&b);
    if let Ok(QueueBody {
        rate: Some(Some(r)),
        ..
    }) = body::<QueueBody>(&b)
    {
        let _ = r.parse::<crate::model::Rate>();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/?{text}").parse::<axum::http::Uri>() else {
        return;
    };
    if let Ok(Query(q)) = Query::<ListQuery>::try_from_uri(&uri) {
        let _ = q.status.as_deref().map(str::parse::<Status>);
    }
    if let Ok(Query(q)) = Query::<LogQuery>::try_from_uri(&uri) {
        let _ = level(&q.level);
    }
}

async fn healthz(State(api): State<Arc<Api>>) -> Response {
    let (scheduler, dispatcher) = api.sup.liveness();
    let db = api.sup.store().queues().await.is_ok();
    let loops = scheduler < Duration::from_secs(30) && dispatcher < Duration::from_secs(30);
    let status = if db && loops {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ok" } else { "unhealthy" },
        "database": db,
        "scheduler_silent_ms": scheduler.as_millis() as u64,
        "dispatcher_silent_ms": dispatcher.as_millis() as u64,
        "node": api.sup.node_id(),
    });
    if status == StatusCode::OK {
        (status, Json(body)).into_response()
    } else {
        let mut r = ApiError::new(status, "unhealthy", body.to_string()).into_response();
        *r.status_mut() = status;
        r
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> ApiResult {
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

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if *method == "POST" || *method == "PUT" {
            op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "jobvisor", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}
            }}
        },
        "security": [{"bearer": []}]
    })
}

async fn openapi() -> ApiResult {
    ok(openapi_document())
}

async fn handlers(State(api): State<Arc<Api>>) -> ApiResult {
    ok(crate::store::all_handlers(api.sup.store().as_ref()).await?)
}

async fn handler(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    match crate::store::handler_or_builtin(api.sup.store().as_ref(), &name).await? {
        Some(h) => ok(h),
        None => Err(ApiError::not_found(format!("no handler named {name:?}"))),
    }
}

async fn jobs(State(api): State<Arc<Api>>) -> ApiResult {
    ok(api.sup.store().jobs().await?)
}

async fn job(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    match api.sup.store().job(&name).await? {
        Some(j) => ok(j),
        None => Err(Error::UnknownJob(name).into()),
    }
}

async fn trigger(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    let id = api.sup.trigger_job(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))).into_response())
}

async fn pause_job(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    api.sup.pause_job(&name).await?;
    ok(json!({"job": name, "paused": true}))
}

async fn resume_job(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    api.sup.resume_job(&name).await?;
    ok(json!({"job": name, "paused": false}))
}

/// The filters of `exec list`, as query parameters (`status` may list
/// several, comma-separated; `since` is a duration before now or a time).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    job: Option<String>,
    handler: Option<String>,
    queue: Option<String>,
    node: Option<String>,
    unique_key: Option<String>,
    concurrency_key: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

impl ListQuery {
    fn filter(self) -> Result<ExecFilter, ApiError> {
        let now = crate::model::now_micros();
        let statuses = match self.status.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<Status>()
                        .map_err(|_| ApiError::invalid(format!("unknown status {s:?}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let time = |what: &str, v: Option<String>, since: bool| {
            v.map(|v| {
                let t = if since {
                    crate::model::parse_since(&v, now)
                } else {
                    crate::model::parse_time(&v, now)
                };
                t.map_err(|e| ApiError::invalid(format!("{what}: {e}")))
            })
            .transpose()
        };
        Ok(ExecFilter {
            statuses,
            job: self.job,
            handler: self.handler,
            queue: self.queue,
            node: self.node,
            unique_key: self.unique_key,
            concurrency_key: self.concurrency_key,
            since: time("since", self.since, true)?,
            until: time("until", self.until, false)?,
            before: self.before.as_deref().map(uuid).transpose()?,
            limit: self.limit.unwrap_or(100).clamp(1, 10_000),
        })
    }
}

async fn executions(State(api): State<Arc<Api>>, Query(q): Query<ListQuery>) -> ApiResult {
    ok(api.sup.store().executions(&q.filter()?).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    handler: String,
    #[serde(default)]
    payload: Value,
    mode: Option<Mode>,
    queue: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    retries: u32,
    timeout_ms: Option<u64>,
    unique_key: Option<String>,
    /// A duration (`10m`): the key still counts that long after its holder ends.
    unique_for: Option<String>,
    #[serde(default)]
    replace: bool,
    concurrency_key: Option<String>,
    /// Executions to run after.
    #[serde(default)]
    after: Vec<String>,
    after_policy: Option<crate::model::AfterPolicy>,
}

async fn enqueue(State(api): State<Arc<Api>>, b: Bytes) -> ApiResult {
    let b: EnqueueBody = body(&b)?;
    if b.handler.is_empty() {
        return Err(ApiError::invalid("handler is required"));
    }
    let mut spec = RunSpec::new(b.handler, b.payload);
    spec.mode = b.mode;
    if let Some(q) = b.queue {
        spec.queue = q;
    }
    spec.priority = b.priority;
    spec.retries = b.retries;
    spec.timeout = b.timeout_ms.map(Duration::from_millis);
    spec.concurrency_key = b.concurrency_key;
    if let Some(key) = b.unique_key {
        spec = spec.unique_key(key);
    }
    if b.replace {
        if spec.unique.is_none() {
            return Err(ApiError::invalid("replace needs unique_key"));
        }
        spec = spec.replace();
    }
    if let Some(hold) = b.unique_for {
        if spec.unique.is_none() {
            return Err(ApiError::invalid("unique_for needs unique_key"));
        }
        let hold = crate::model::parse_duration(&hold)
            .map_err(|e| ApiError::invalid(format!("unique_for: {e}")))?;
        spec = spec.unique_for(hold);
    }
    if b.replace && !b.after.is_empty() {
        return Err(ApiError::invalid("replace cannot be combined with after"));
    }
    for id in &b.after {
        spec =
            spec.after(uuid(id).map_err(|e| ApiError::invalid(format!("after: {}", e.message)))?);
    }
    if let Some(policy) = b.after_policy {
        if b.after.is_empty() {
            return Err(ApiError::invalid("after_policy needs after"));
        }
        spec = spec.after_policy(policy);
    }
    let e = api.sup.submit_many(vec![spec]).await?[0];
    let status = if e.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(e)).into_response())
}

async fn execution(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    let id = uuid(&id)?;
    let store = api.sup.store();
    let Some(e) = store.execution(id).await? else {
        return Err(ApiError::not_found(format!("no execution {id}")));
    };
    let links = store.links(id).await?;
    let mut v = serde_json::to_value(e).expect("executions serialize");
    v["parents"] = json!(links.parents);
    v["children"] = json!(links.children);
    ok(v)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel(State(api): State<Arc<Api>>, Path(id): Path<String>, b: Bytes) -> ApiResult {
    let id = uuid(&id)?;
    let b: CancelBody = body(&b)?;
    let reason = b
        .reason
        .unwrap_or_else(|| "requested through the API".into());
    use crate::store::CancelRequest;
    match api.sup.cancel(id, &reason).await? {
        CancelRequest::NotFound => Err(ApiError::not_found(format!("no execution {id}"))),
        CancelRequest::AlreadyFinished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "finished",
            format!("execution {id} has already finished ({status})"),
        )),
        CancelRequest::CancelledPending => ok(json!({"id": id, "cancel": "cancelled"})),
        CancelRequest::Requested => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "cancel": "requested"})),
        )
            .into_response()),
    }
}

async fn retry(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    use crate::store::RetryRequest;
    let id = uuid(&id)?;
    let r = api.sup.retry(id).await?;
    match (&r, r.refusal(id)) {
        (RetryRequest::Retried(new), _) => {
            Ok((StatusCode::CREATED, Json(json!({"id": new, "retries": id}))).into_response())
        }
        (RetryRequest::NotFound, Some(why)) => Err(ApiError::not_found(why)),
        (_, why) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            why.unwrap_or_default(),
        )),
    }
}

/// The body of a bulk action: `exec list`'s filters (as JSON; `status` a
/// status or a list, `since` a duration before now or a time), and a
/// reason for cancels.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    #[serde(default)]
    status: Option<Value>,
    job: Option<String>,
    handler: Option<String>,
    queue: Option<String>,
    node: Option<String>,
    unique_key: Option<String>,
    concurrency_key: Option<String>,
    since: Option<String>,
    until: Option<String>,
    reason: Option<String>,
}

impl BulkBody {
    fn filter(self) -> Result<(ExecFilter, Option<String>), ApiError> {
        let status = match self.status {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ApiError::invalid("status: expected a status or a list of them")
                    })?
                    .join(","),
            ),
            Some(_) => {
                return Err(ApiError::invalid(
                    "status: expected a status or a list of them",
                ))
            }
        };
        let q = ListQuery {
            status,
            job: self.job,
            handler: self.handler,
            queue: self.queue,
            node: self.node,
            unique_key: self.unique_key,
            concurrency_key: self.concurrency_key,
            since: self.since,
            until: self.until,
            before: None,
            limit: None,
        };
        let filter = q.filter()?;
        if !filter.narrows() {
            return Err(ApiError::invalid(
                "give at least one filter (status, job, handler, queue, node, unique_key, concurrency_key, since, until)",
            ));
        }
        Ok((filter, self.reason))
    }
}

async fn cancel_matching(State(api): State<Arc<Api>>, b: Bytes) -> ApiResult {
    let (filter, reason) = body::<BulkBody>(&b)?.filter()?;
    let reason = reason.unwrap_or_else(|| "requested through the API".into());
    ok(api.sup.cancel_matching(&filter, &reason).await?)
}

async fn retry_matching(State(api): State<Arc<Api>>, b: Bytes) -> ApiResult {
    let (filter, reason) = body::<BulkBody>(&b)?.filter()?;
    if reason.is_some() {
        return Err(ApiError::invalid("reason is for cancels"));
    }
    ok(api.sup.retry_matching(&filter).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after_seq: Option<i64>,
    level: Option<String>,
    limit: Option<usize>,
}

fn level(q: &Option<String>) -> Result<Option<Level>, ApiError> {
    q.as_deref()
        .map(|l| {
            l.parse::<Level>()
                .map_err(|_| ApiError::invalid(format!("unknown level {l:?}")))
        })
        .transpose()
}

async fn logs(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    let id = uuid(&id)?;
    let min = level(&q.level)?;
    if api.sup.store().execution(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    let lines = api
        .sup
        .store()
        .logs(
            id,
            q.after_seq.unwrap_or(0),
            min,
            q.limit.unwrap_or(1000).clamp(1, 100_000),
        )
        .await?;
    ok(lines)
}

/// How often a stream looks for new lines and progress.
const STREAM_POLL: Duration = Duration::from_millis(100);

async fn stream_execution(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = uuid(&id)?;
    let min = level(&q.level)?;
    if api.sup.store().execution(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    // State: (after_seq, last progress, finished, pending events).
    struct S {
        api: Arc<Api>,
        after: i64,
        progress: Option<Value>,
        done: bool,
        queue: std::collections::VecDeque<Event>,
    }
    let s = S {
        api,
        after: q.after_seq.unwrap_or(0),
        progress: None,
        done: false,
        queue: Default::default(),
    };
    let events = stream::unfold(s, move |mut s| async move {
        loop {
            if let Some(e) = s.queue.pop_front() {
                return Some((Ok(e), s));
            }
            if s.done {
                return None;
            }
            let store = s.api.sup.store().clone();
            // Read the state first: lines written before it finished are
            // then all in the read that follows.
            let exec = store.execution(id).await.ok().flatten();
            if let Ok(lines) = store.logs(id, s.after, min, 1000).await {
                let full = lines.len() == 1000;
                for l in lines {
                    s.after = l.seq;
                    let data = serde_json::to_string(&l).unwrap_or_default();
                    s.queue.push_back(
                        Event::default()
                            .event("log")
                            .id(l.seq.to_string())
                            .data(data),
                    );
                }
                if full {
                    continue;
                }
            }
            if let Some(e) = exec {
                let p = serde_json::to_value(&e.progress).unwrap_or(Value::Null);
                if s.progress.as_ref() != Some(&p) && p != json!({}) {
                    s.queue
                        .push_back(Event::default().event("progress").data(p.to_string()));
                    s.progress = Some(p);
                }
                if e.status.is_terminal() {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    s.queue.push_back(Event::default().event("end").data(data));
                    s.done = true;
                }
            } else {
                s.done = true;
            }
            if s.queue.is_empty() {
                tokio::time::sleep(STREAM_POLL).await;
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn events(State(api): State<Arc<Api>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let started = api.sup.subscribe_started();
    let finished = api.sup.subscribe();
    let s = stream::unfold(
        (started, finished),
        |(mut started, mut finished)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let event = tokio::select! {
                r = started.recv() => match r {
                    Ok(id) => Event::default().event("state").data(
                        json!({"id": id, "status": "running", "at_us": now_micros()}).to_string()),
                    Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                    Err(RecvError::Closed) => return None,
                },
                r = finished.recv() => match r {
                    Ok(f) => Event::default().event("state").data(
                        json!({"id": f.id, "status": f.status, "retry": f.retry, "at_us": now_micros()}).to_string()),
                    Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (started, finished)))
        },
    );
    Sse::new(s).keep_alive(KeepAlive::default())
}

async fn queues(State(api): State<Arc<Api>>) -> ApiResult {
    ok(api.sup.store().queues().await?)
}

async fn set_queue_paused(api: &Api, name: &str, paused: bool) -> ApiResult {
    let change = QueueChange {
        paused: Some(paused),
        ..Default::default()
    };
    api.sup.set_queue(name, &change).await?;
    ok(json!({"queue": name, "paused": paused}))
}

/// A field that may be absent (leave it), `null` (remove it) or a value.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// `PUT /v1/queues/{name}`: each field given is set, `null` removes a limit,
/// and a field left out stays as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueBody {
    #[serde(default, deserialize_with = "present")]
    limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    key_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    rate: Option<Option<String>>,
    paused: Option<bool>,
}

async fn put_queue(State(api): State<Arc<Api>>, Path(name): Path<String>, b: Bytes) -> ApiResult {
    let b: QueueBody = body(&b)?;
    let rate = match b.rate {
        None => None,
        Some(None) => Some(None),
        Some(Some(r)) => Some(Some(
            r.parse::<crate::model::Rate>()
                .map_err(|e| ApiError::invalid(format!("rate: {e}")))?,
        )),
    };
    let change = QueueChange {
        limit: b.limit,
        key_limit: b.key_limit,
        rate,
        paused: b.paused,
    };
    api.sup.set_queue(&name, &change).await?;
    let queues = api.sup.store().queues().await?;
    match queues.into_iter().find(|q| q.name == name) {
        Some(q) => ok(q),
        None => Err(ApiError::not_found(format!("no queue named {name:?}"))),
    }
}

async fn pause_queue(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    set_queue_paused(&api, &name, true).await
}

async fn resume_queue(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    set_queue_paused(&api, &name, false).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowsQuery {
    limit: Option<usize>,
}

async fn workflows(State(api): State<Arc<Api>>, Query(q): Query<WorkflowsQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let all = api.sup.store().workflows(limit).await?;
    ok(all
        .into_iter()
        .map(crate::workflow::Summary::from)
        .collect::<Vec<_>>())
}

async fn run_workflow(State(api): State<Arc<Api>>, b: Bytes) -> ApiResult {
    let spec: crate::workflow::WorkflowSpec = body(&b)?;
    let done = api.sup.workflow(&spec).await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

async fn workflow(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    let id = workflow_id(&id)?;
    match api.sup.store().workflow(id).await? {
        Some((info, spec, execs)) => ok(crate::workflow::View::new(info, &spec, execs)),
        None => Err(ApiError::not_found(format!("no workflow {id}"))),
    }
}

async fn cancel_workflow(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    b: Bytes,
) -> ApiResult {
    let id = workflow_id(&id)?;
    let b: CancelBody = body(&b)?;
    let reason = b
        .reason
        .unwrap_or_else(|| "requested through the API".into());
    match api.sup.cancel_workflow(id, &reason).await? {
        Some(done) => {
            ok(json!({"id": id, "cancelled": done.cancelled, "requested": done.requested}))
        }
        None => Err(ApiError::not_found(format!("no workflow {id}"))),
    }
}

async fn stats(State(api): State<Arc<Api>>) -> ApiResult {
    ok(api.sup.store().stats(None).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
        assert!(!same(b"x", b""));
    }

    #[test]
    fn only_loopback_may_listen_without_a_token() {
        assert!(check_listen("127.0.0.1:8080".parse().unwrap(), None).is_ok());
        assert!(check_listen("[::1]:8080".parse().unwrap(), None).is_ok());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap(), None).is_err());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap(), Some("")).is_err());
        assert!(check_listen("0.0.0.0:8080".parse().unwrap(), Some("t")).is_ok());
    }
}
